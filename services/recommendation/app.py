"""Entry points: `build_service(config)` for tests and the evaluation, `main(argv)` for the command line."""

from __future__ import annotations

from collections.abc import Sequence

from services.common.config import load_config
from services.common.server import run_service
from services.recommendation.config import DEFAULT_PORT, SERVICE, RecommendationConfig
from services.recommendation.service import RecommendationService


def build_service(config: RecommendationConfig) -> RecommendationService:
    return RecommendationService(config)


def main(argv: Sequence[str] | None = None) -> None:
    config = load_config(RecommendationConfig, SERVICE, argv, defaults={"port": DEFAULT_PORT},
                         description="Vitrine recommendation service")
    run_service(config, build_service(config))
