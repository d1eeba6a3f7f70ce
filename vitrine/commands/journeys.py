"""`vitrine journeys list | put | stats [ID] | pull`: journeys of the journeys service."""

from __future__ import annotations

import argparse
import asyncio
import sys

from google.protobuf import json_format

from services.common.channel import open_channel
from vitrine.commands._service_flags import add_service_flags
from vitrine.commands._table import table
from vitrine.v1 import journey_pb2, journey_pb2_grpc, recommend_pb2

NAME = "journeys"
HELP = "list or define journeys, print their statistics, or pull due messages (JSON lines, acked)"
MINUTE_MS = 60_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_flags(parser, "journeys service", "VITRINE_JOURNEYS_ADDRESS", "127.0.0.1:50055")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for an answer")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    sub.add_parser("list", help="every journey with its kind, delay and filter")
    put = sub.add_parser("put", help="define (or replace) a journey")
    put.add_argument("journey_id")
    kinds = [k for k in journey_pb2.JourneyKind.keys() if k != "JOURNEY_KIND_UNSPECIFIED"]  # noqa: SIM118
    put.add_argument("--kind", required=True, choices=kinds)
    put.add_argument("--name", default="")
    put.add_argument("--delay-minutes", type=float, default=60.0, help="wait after the trigger (default 60)")
    put.add_argument("--k", type=int, default=0, help="recommended items (0 = the service default)")
    put.add_argument("--strategy", default="STRATEGY_UNSPECIFIED", choices=list(recommend_pb2.Strategy.keys()))
    put.add_argument("--segment", action="append", default=[], help="entry filter (any of; repeatable)")
    put.add_argument("--offer-id", default="")
    put.add_argument("--reentry-days", type=int, default=0)
    put.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="kind setting (repeatable)")
    put.add_argument("--disabled", action="store_true")
    stats = sub.add_parser("stats", help="entered, sent, suppressed (by reason), opened, clicked, converted, revenue")
    stats.add_argument("journey_id", nargs="?", help="one journey (default: all)")
    pull = sub.add_parser("pull", help="print due messages as JSON lines and ack them")
    pull.add_argument("--max", type=int, default=100, help="messages per pull (default 100)")
    pull.add_argument("--wait-ms", type=int, default=1000, help="long poll for the first message (default 1000)")
    pull.add_argument("--follow", action="store_true", help="keep pulling until interrupted")
    pull.add_argument("--no-ack", action="store_true", help="leave them to be delivered again")


def list_table(journeys: list[journey_pb2.Journey]) -> str:
    rows = [[j.journey_id, journey_pb2.JourneyKind.Name(j.kind), "on" if j.enabled else "off",
             f"{j.delay_ms / MINUTE_MS:g} min", ", ".join(j.segment_ids) or "everyone",
             ", ".join(f"{k}={v}" for k, v in sorted(j.params.items())) or "-"] for j in journeys]
    return table(["journey", "kind", "enabled", "delay", "who", "params"], rows)


def stats_table(stats: list[tuple[str, journey_pb2.JourneyStats]]) -> str:
    rows = []
    for journey_id, s in stats:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(s.suppressed_by_reason.items())) or "-"
        exits = ", ".join(f"{k}={v}" for k, v in sorted(s.cancelled_by_reason.items())) or "-"
        rows.append([journey_id, f"{s.entered:,}", f"{s.pending:,}", f"{s.sent:,}", f"{s.delivered:,}",
                     f"{s.cancelled:,} ({exits})", f"{s.suppressed:,} ({reasons})", f"{s.opened:,}", f"{s.clicked:,}",
                     f"{s.converted:,}", f"{s.revenue:,.2f}"])
    return table(["journey", "entered", "pending", "sent", "delivered", "cancelled", "suppressed", "opened",
                  "clicked", "converted", "revenue"], rows)


def _journey(args: argparse.Namespace) -> journey_pb2.Journey:
    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--param {item!r}: expected NAME=VALUE")
        params[name] = value
    return journey_pb2.Journey(
        journey_id=args.journey_id, name=args.name or args.journey_id, kind=journey_pb2.JourneyKind.Value(args.kind),
        enabled=not args.disabled, delay_ms=int(args.delay_minutes * MINUTE_MS), k=args.k,
        strategy=recommend_pb2.Strategy.Value(args.strategy), segment_ids=args.segment, offer_id=args.offer_id,
        reentry_days=args.reentry_days, params=params)


async def _call(args: argparse.Namespace) -> int:
    async with open_channel(args.address, auth_token=args.auth_token) as channel:
        stub = journey_pb2_grpc.JourneyServiceStub(channel)
        if args.action == "list":
            response = await stub.ListJourneys(journey_pb2.ListJourneysRequest(), timeout=args.timeout)
            print(list_table(list(response.journeys)))
        elif args.action == "put":
            stored = await stub.PutJourney(journey_pb2.PutJourneyRequest(journey=_journey(args)), timeout=args.timeout)
            print(list_table([stored]))
        elif args.action == "stats":
            ids = [args.journey_id] if args.journey_id else [
                j.journey_id for j in (await stub.ListJourneys(journey_pb2.ListJourneysRequest(),
                                                               timeout=args.timeout)).journeys]
            stats = [(i, await stub.GetJourneyStats(journey_pb2.GetJourneyStatsRequest(journey_id=i),
                                                    timeout=args.timeout)) for i in ids]
            print(stats_table(stats))
        else:
            while True:
                pulled = await stub.PullMessages(journey_pb2.PullMessagesRequest(max=args.max, wait_ms=args.wait_ms),
                                                   timeout=args.timeout + args.wait_ms / 1000)
                for message in pulled.messages:
                    print(json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None))
                sys.stdout.flush()
                if pulled.messages and not args.no_ack:
                    await stub.AckMessages(journey_pb2.AckMessagesRequest(
                        message_ids=[m.message_id for m in pulled.messages]), timeout=args.timeout)
                if not args.follow and len(pulled.messages) < args.max:
                    break
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_call(args))
    except Exception as exc:  # a gRPC error: say what the service said
        details = getattr(exc, "details", None)
        code = getattr(exc, "code", None)
        if callable(details) and callable(code):
            print(f"journeys: {code().name}: {details()}", file=sys.stderr)
            return 1
        raise


