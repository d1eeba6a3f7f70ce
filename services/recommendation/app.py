"""Entry points: `build_service(config)` for tests and the evaluation, `main(argv)` for the command line."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from services.common.config import load_config
from services.common.server import run_service
from services.recommendation.config import DEFAULT_PORT, SERVICE, RecommendationConfig
from services.recommendation.service import RecommendationService
from services.recommendation.servicer import RecommendServicer
from vitrine.v1 import recommend_pb2_grpc


class RecommendationApp(RecommendationService):
    """The Service object the scaffolding runs. As in every service, app.py binds the servicer to the
    domain object (here `RecommendationService` itself), so service.py never imports servicer.py."""

    def add_to_server(self, server: grpc.aio.Server) -> None:
        recommend_pb2_grpc.add_RecommendServiceServicer_to_server(RecommendServicer(self), server)


def build_service(config: RecommendationConfig) -> RecommendationApp:
    return RecommendationApp(config)


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(RecommendationConfig, SERVICE, argv, defaults={"port": DEFAULT_PORT},
                         description="Vitrine recommendation service")
    run_service(config, build_service(config))
