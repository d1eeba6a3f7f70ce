"""A service with no RPCs of its own, on the real scaffolding: starts in a fraction of a second,
so the supervisor's restart policy can be tested with real processes (`python -m`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import grpc

from services.common.config import ServerConfig, load_config
from services.common.server import run_service


class TinyService:
    name = "tiny"
    service_names: Sequence[str] = ()

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pass

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(ServerConfig, "tiny", argv)
    run_service(config, TinyService())


if __name__ == "__main__":
    main(sys.argv[1:])
