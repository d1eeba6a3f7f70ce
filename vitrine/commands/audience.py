"""`vitrine audience export --segment ID | --rule RULE [--marketing-only] [--limit N] [--out FILE]`:
the members of a segment as CSV (ExportAudience), with progress."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import sys
from typing import TextIO

import grpc

from services.common.channel import open_channel
from vitrine.commands._service_flags import add_service_flags
from vitrine.v1 import segment_pb2, segment_pb2_grpc

NAME = "audience"
HELP = "export the members of a segment or a rule as CSV (e-mail lists, ad-platform custom audiences)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_service_flags(parser, "segmentation service", "VITRINE_SEGMENTATION_ADDRESS", "127.0.0.1:50053")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = sub.add_parser("export", help="stream the members as CSV")
    target = export.add_mutually_exclusive_group(required=True)
    target.add_argument("--segment", default="", help="a segment id (built-in or stored)")
    target.add_argument("--rule", default="", help='an ad-hoc rule, e.g. \'events("ADD_TO_CART", days=7) > 0 and '
                                                   'events("PURCHASE", days=7) == 0\'')
    export.add_argument("--marketing-only", action="store_true", help="only shoppers with marketing consent")
    export.add_argument("--limit", type=int, default=0, help="at most this many members (0 = all)")
    export.add_argument("--traits", default="", help="trait keys as their own columns, comma-separated "
                                                     "(default: every trait in one JSON column)")
    export.add_argument("--out", default="-", help="CSV file (default - = standard output)")
    export.add_argument("--timeout", type=float, default=600.0, help="seconds the whole export may take")


async def export(args: argparse.Namespace, out: TextIO, progress: bool = True) -> int:
    """Write the CSV; returns the number of members written."""
    from tqdm import tqdm

    keys = [k for k in args.traits.split(",") if k]
    writer = csv.writer(out)
    writer.writerow(["user_id", "customer_id", *(keys or ["traits"])])
    request = segment_pb2.ExportAudienceRequest(require_marketing_consent=args.marketing_only, limit=args.limit)
    if args.segment:
        request.segment_id = args.segment
    else:
        request.rule = args.rule
    written = 0
    async with open_channel(args.address, auth_token=args.auth_token) as channel:
        stub = segment_pb2_grpc.SegmentServiceStub(channel)
        with tqdm(total=args.limit or None, unit=" members", desc="exporting", disable=not progress,
                  file=sys.stderr) as bar:
            async for member in stub.ExportAudience(request, timeout=args.timeout):
                traits = [member.traits.get(k, "") for k in keys] if keys else \
                    [json.dumps(dict(member.traits), sort_keys=True)]
                writer.writerow([member.user_id, member.customer_id, *traits])
                written += 1
                bar.update(1)
    return written


def run(args: argparse.Namespace) -> int:
    try:
        with contextlib.ExitStack() as stack:
            out = sys.stdout if args.out == "-" else stack.enter_context(open(args.out, "w", newline="",
                                                                              encoding="utf-8"))
            written = asyncio.run(export(args, out))
    except grpc.aio.AioRpcError as err:
        print(f"{err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(f"{written:,} members written to {args.out if args.out != '-' else 'standard output'}", file=sys.stderr)
    return 0
