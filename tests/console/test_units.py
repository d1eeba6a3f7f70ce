"""Unit tests of the console's plain parts: passwords, login limits, CSRF tokens, the audit log,
timeline lines and the Personalize requests of the customer page."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.console.audit import AuditLog
from services.console.auth import (
    LoginLimiter,
    check_hash_format,
    csrf_matches,
    hash_password,
    new_csrf_token,
    verify_password,
)
from services.console.customer import event_item, page_requests
from services.console.pages_segments import audience_csv
from vitrine.v1 import common_pb2, segment_pb2


def test_password_hash_round_trip_and_salt() -> None:
    first, second = hash_password("correct horse"), hash_password("correct horse")
    assert first != second  # salted
    assert verify_password("correct horse", first) and verify_password("correct horse", second)
    assert not verify_password("correct hors", first)
    assert "correct horse" not in first


def test_bad_hash_format_is_refused() -> None:
    for bad in ("", "plain-text", "scrypt$1$2$3$!!$??", "md5$1$2$3$YQ==$YQ=="):
        with pytest.raises(ValueError):
            check_hash_format(bad)


def test_login_limiter_blocks_after_failures_and_forgets_after_the_window() -> None:
    now = [0.0]
    limiter = LoginLimiter(allowed=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert not limiter.blocked("10.0.0.1")
        limiter.failed("10.0.0.1")
    assert limiter.blocked("10.0.0.1") and not limiter.blocked("10.0.0.2")
    now[0] = 61.0
    assert not limiter.blocked("10.0.0.1")
    limiter.failed("10.0.0.1")
    limiter.succeeded("10.0.0.1")
    assert not limiter.blocked("10.0.0.1")


def test_csrf_tokens() -> None:
    token = new_csrf_token()
    assert len(token) >= 32 and token != new_csrf_token()
    assert csrf_matches(token, token)
    assert not csrf_matches(token, token[:-1] + "x")
    assert not csrf_matches(token, None) and not csrf_matches(None, token) and not csrf_matches("", "")


async def test_audit_lines_are_durable_json_and_newest_first(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "console")
    await audit.record("ana", "customer.consent", "c1", client="127.0.0.1", consent={"marketing": False})
    await audit.record("bo", "customer.erase", "c2", events_deleted=3)
    lines = (tmp_path / "console" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["customer.consent", "customer.erase"]
    first = json.loads(lines[0])
    assert first["operator"] == "ana" and first["target"] == "c1" and first["ok"] is True
    assert first["details"] == {"consent": {"marketing": False}} and first["ts_ms"] > 0
    # A line torn by a crash mid-write is skipped; the others stay readable.
    path = tmp_path / "console" / "audit.jsonl"
    path.write_text(path.read_text() + '{"ts_ms": 1, "operator": "x", "act')
    assert [e["target"] for e in AuditLog(tmp_path / "console").tail(10)] == ["c2", "c1"]
    assert [e["target"] for e in audit.tail(1)] == ["c2"]


def test_timeline_line_of_a_stored_purchase() -> None:
    item = event_item({
        "type": "PURCHASE", "timestamp_ms": "1793491200000", "product_id": "p1", "category": "running",
        "price": 12.5, "quantity": 2, "order_id": "o9", "session_id": "s1",
        "context": {"device_type": "mobile", "country": "FR", "utm": {"campaign": "spring"}},
        "personalization_off": True,
    })
    assert item.ts_ms == 1793491200000 and item.group == "purchase" and item.personalization_off
    assert item.what == "p1 in running 2 x 12.50 order o9"
    assert item.context == "mobile · FR · campaign spring · session s1"
    assert event_item({"type": "EMAIL_CLICK", "campaign_id": "m1"}).group == "e-mail"


def test_page_requests_anchor_on_the_shopper() -> None:
    profile = common_pb2.Profile(user_id="c1", recently_viewed=["p9", "p3"], category_affinity={"a": 0.2, "b": 0.7},
                                 cart=[common_pb2.CartItem(product_id="p5", quantity=1)])
    pages = {page.page_type: page for page in page_requests(profile)}
    assert set(pages) == {"home", "product", "category", "cart", "checkout", "search"}
    assert all(page.request.preview and page.request.deadline_ms > 0 for page in pages.values())
    assert pages["product"].request.product_id == "p9" and pages["category"].request.category == "b"
    assert list(pages["cart"].request.cart_product_ids) == ["p5"] and not pages["cart"].skipped
    empty = {page.page_type: page for page in page_requests(common_pb2.Profile(user_id="v1"))}
    assert empty["product"].skipped and empty["cart"].skipped and not empty["home"].skipped


async def test_audience_csv_columns_from_traits() -> None:
    async def members() -> AsyncIterator[segment_pb2.AudienceMember]:
        yield segment_pb2.AudienceMember(user_id="c1", customer_id="c1", traits={"email": "a@x.org"})
        yield segment_pb2.AudienceMember(user_id="v2", traits={"email": "b@x.org", "city": "Lyon, FR"})

    text = "".join([chunk async for chunk in audience_csv(members())])
    assert text.splitlines() == ["user_id,customer_id,city,email,other_traits", "c1,c1,,a@x.org,",
                                 'v2,,"Lyon, FR",b@x.org,']
