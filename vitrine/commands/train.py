"""`vitrine train`: train the recommendation model through the running recommendation service.

    vitrine train --sessions FILE [--address 127.0.0.1:50054] [--dimensions N]
    vitrine train --from-event-log [--since-ms MS]

FILE has one session a line, product ids separated by spaces (or tabs), oldest first; blank
lines and lines starting with '#' are skipped. Products the service has not seen are created
(in stock, no price). Progress goes to stderr; the result (model version, items, interactions)
to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import grpc
from tqdm import tqdm

from services.common.channel import open_channel
from vitrine.v1 import recommend_pb2, recommend_pb2_grpc

NAME = "train"
HELP = "train the recommendation model from a sessions file or the profile event log, and swap it in"
DEFAULT_ADDRESS = "127.0.0.1:50054"
TRAIN_TIMEOUT_SECONDS = 3_600.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024   # the service's default max_message_mb
READ_PROGRESS_EVERY = 100_000          # lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--sessions", type=Path, metavar="FILE", help="one session a line, ids separated by spaces")
    source.add_argument("--from-event-log", action="store_true",
                        help="let the service read sessions from the profile shards (ScanEvents)")
    parser.add_argument("--since-ms", type=int, default=0, help="with --from-event-log: events since this time")
    parser.add_argument("--address", default=os.environ.get("VITRINE_RECOMMENDATION_ADDRESS", DEFAULT_ADDRESS),
                        help=f"recommendation service (env VITRINE_RECOMMENDATION_ADDRESS; default {DEFAULT_ADDRESS})")
    parser.add_argument("--dimensions", type=int, default=0, help="vector dimensions (0 = the service's default)")
    parser.add_argument("--timeout", type=float, default=TRAIN_TIMEOUT_SECONDS, help="deadline of the Train call, s")
    parser.add_argument("--token", default=os.environ.get("VITRINE_AUTH_TOKEN", ""), help="bearer token, if any")


def read_sessions(path: Path) -> list[list[str]]:
    """Sessions from a file, reporting progress on stderr."""
    sessions: list[list[str]] = []
    with path.open(encoding="utf-8") as handle, \
            tqdm(total=path.stat().st_size, desc=f"reading {path.name}", unit="B", unit_scale=True,
                 file=sys.stderr) as bar:
        read = 0
        for number, line in enumerate(handle, 1):
            read += len(line.encode("utf-8"))
            ids = line.split()
            if ids and not ids[0].startswith("#"):
                sessions.append(ids)
            if number % READ_PROGRESS_EVERY == 0:
                bar.update(read - bar.n)
                bar.set_postfix_str(f"{len(sessions):,} sessions", refresh=False)
        bar.update(read - bar.n)
    print(f"read {len(sessions):,} sessions, {sum(len(s) for s in sessions):,} product ids", file=sys.stderr)
    return sessions


async def _train(args: argparse.Namespace, request: recommend_pb2.TrainRequest) -> recommend_pb2.TrainResponse:
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    async with open_channel(args.address, auth_token=args.token, options=options) as channel:
        stub = recommend_pb2_grpc.RecommendServiceStub(channel)
        call = stub.Train(request, timeout=args.timeout)
        started = time.monotonic()
        task = asyncio.ensure_future(call)
        # The server reports no progress: the bar counts the seconds the call has run.
        with tqdm(desc=f"training on {args.address}", unit="s", file=sys.stderr,
                  bar_format="{desc}: {elapsed}") as bar:
            while not task.done():
                await asyncio.wait([task], timeout=0.5)
                bar.update()
        print(f"trained in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return task.result()


def run(args: argparse.Namespace) -> int:
    if args.sessions is not None:
        try:
            sessions = read_sessions(args.sessions)
        except OSError as exc:
            print(f"vitrine train: cannot read {args.sessions}: {exc}", file=sys.stderr)
            return 2
        request = recommend_pb2.TrainRequest(
            sessions=[recommend_pb2.TrainRequest.Session(product_ids=s) for s in sessions],
            dimensions=args.dimensions, create_missing_products=True)
        if request.ByteSize() > MAX_MESSAGE_BYTES:
            print(f"vitrine train: {args.sessions} is {request.ByteSize() / 2**20:.0f} MiB as a request; "
                  f"the limit is {MAX_MESSAGE_BYTES // 2**20} MiB (track the events and use --from-event-log)",
                  file=sys.stderr)
            return 2
    else:
        request = recommend_pb2.TrainRequest(from_event_log=True, since_ms=args.since_ms,
                                             dimensions=args.dimensions)
    try:
        reply = asyncio.run(_train(args, request))
    except grpc.aio.AioRpcError as err:
        print(f"\nvitrine train: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    print(f"model_version {reply.model_version}")
    print(f"items {reply.items}")
    print(f"interactions {reply.interactions}")
    print(f"index {reply.index_type} (recall@10 {reply.recall_at_10:.3f}), "
          f"train {reply.train_seconds:.1f}s, index {reply.index_seconds:.1f}s, "
          f"products created {reply.products_created}")
    return 0
