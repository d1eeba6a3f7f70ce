"""Optional delivery by webhook: each ready message is POSTed as JSON to the configured URL with an
HMAC-SHA256 signature header, acked on a 2xx answer, and otherwise leased again with a growing
delay (exponential backoff) so the e-mail provider gets it at least once."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging

import httpx
from google.protobuf import json_format
from prometheus_client import Counter

from services.common.tasks import cancel_and_wait
from services.journeys import config as C
from services.journeys.engine import JourneyEngine
from vitrine.v1 import journey_pb2

log = logging.getLogger(__name__)
WEBHOOK_POSTS = Counter("vitrine_journeys_webhook_posts_total", "Webhook POSTs, by result", ["result"])


def signature(secret: str, body: bytes) -> str:
    """The header value a receiver recomputes: sha256=<hex HMAC of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff_ms(attempt: int) -> int:
    """Lease of a message on its attempt-th POST: the wait before the next try if this one fails."""
    seconds = min(C.WEBHOOK_MAX_BACKOFF_SECONDS, C.WEBHOOK_BACKOFF_SECONDS * 2 ** max(0, attempt - 1))
    return int(seconds * 1000)


def message_json(message: journey_pb2.Message) -> bytes:
    return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None).encode()


class WebhookDelivery:
    def __init__(self, engine: JourneyEngine, url: str, secret: str) -> None:
        self.engine = engine
        self.url = url
        self.secret = secret
        self._task: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient(timeout=C.WEBHOOK_TIMEOUT_SECONDS)
        self.acked = 0
        self._progress = asyncio.Condition()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="journeys-webhook")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self._client.aclose()

    async def wait_acked(self, n: int) -> None:
        """Until `n` messages were accepted by the receiver and acked (bound it with wait_for)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.acked >= n)

    async def _loop(self) -> None:
        while True:
            try:
                messages = self.engine.take(C.WEBHOOK_CONCURRENCY, backoff_ms)
                if not messages:
                    await self.engine.wait_for_outbox(C.TIMER_IDLE_SECONDS)
                    continue
                results = await asyncio.gather(*(self._post(m) for m in messages))
                acked = self.engine.ack([m.message_id for m, ok in zip(messages, results, strict=True) if ok])
                async with self._progress:
                    self.acked += acked
                    self._progress.notify_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook pass failed; retrying")
                await asyncio.sleep(C.WEBHOOK_BACKOFF_SECONDS)

    async def _post(self, message: journey_pb2.Message) -> bool:
        body = message_json(message)
        headers = {"Content-Type": "application/json", "X-Vitrine-Message-Id": message.message_id}
        if self.secret:
            headers[C.SIGNATURE_HEADER] = signature(self.secret, body)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("webhook POST of %s failed (%s); retrying later", message.message_id, exc)
            WEBHOOK_POSTS.labels("error").inc()
            return False
        ok = 200 <= response.status_code < 300
        WEBHOOK_POSTS.labels("ok" if ok else str(response.status_code)).inc()
        if not ok:
            log.warning("webhook answered %d for %s; retrying later", response.status_code, message.message_id)
        return ok
