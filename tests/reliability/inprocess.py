"""The real services in-process on free ports, with a few protected shoppers whose stored state
the reliability tests compare before and after (they are never named by the fuzzer)."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import grpc

os.environ.setdefault("OMP_NUM_THREADS", "1")

from services.common.server import RunningServer, build_server
from tests.reliability.hostile import PROTECTED_PREFIX
from vitrine.v1 import common_pb2, profile_pb2, profile_pb2_grpc

PROTECTED_USERS = tuple(f"{PROTECTED_PREFIX}{i}" for i in range(5))
NOW_MS = 1_764_720_000_000


@dataclasses.dataclass
class InProcessSuite:
    root: Path
    servers: dict[str, RunningServer]  # by short name: profile, segmentation, recommendation, gateway

    def address(self, name: str) -> str:
        return self.servers[name].address

    async def close(self) -> None:
        order = ("gateway", *[n for n in self.servers if n != "gateway"])
        for name in order:
            if name in self.servers:
                await self.servers[name].stop(0)


async def start_inprocess_suite(root: Path, *, with_demo: bool = True,
                                auth_token: str = "") -> InProcessSuite:
    from services.gateway.app import GatewayService
    from services.gateway.config import GatewayConfig
    from services.profile.app import build_service as build_profile
    from services.profile.config import ProfileConfig
    from services.recommendation.app import build_service as build_recommendation
    from services.recommendation.config import RecommendationConfig
    from services.segmentation.app import build_service as build_segmentation
    from services.segmentation.config import SegmentationConfig

    servers: dict[str, RunningServer] = {}
    suite = InProcessSuite(root, servers)
    try:
        profile_config = ProfileConfig(port=0, data_dir=str(root / "profile"), purge_interval_seconds=0,
                                       auth_token=auth_token)
        servers["profile"] = await build_server(profile_config, build_profile(profile_config))
        profiles = servers["profile"].address
        seg_config = SegmentationConfig(port=0, data_dir=str(root / "seg"), profile_addresses=profiles,
                                        auth_token=auth_token)
        servers["segmentation"] = await build_server(seg_config, build_segmentation(seg_config))
        rec_config = RecommendationConfig(port=0, data_dir=str(root / "reco"), snapshot_seconds=0,
                                          profile_addresses=profiles, auth_token=auth_token)
        servers["recommendation"] = await build_server(rec_config, build_recommendation(rec_config))
        gw_config = GatewayConfig(port=0, profile_addresses=profiles,
                                  segmentation_address=servers["segmentation"].address,
                                  recommendation_address=servers["recommendation"].address,
                                  trending_refresh_seconds=0.5, deadline_ms=500, auth_token=auth_token)
        servers["gateway"] = await build_server(gw_config, GatewayService(gw_config))
        if journeys_available():
            from services.journeys.app import build_service as build_journeys
            from services.journeys.config import JourneysConfig

            jr_config = JourneysConfig(port=0, data_dir=str(root / "journeys"), profile_addresses=profiles,
                                       recommendation_address=servers["recommendation"].address,
                                       segmentation_address=servers["segmentation"].address,
                                       auth_token=auth_token)
            servers["journeys"] = await build_server(jr_config, build_journeys(jr_config))
        if with_demo:
            from vitrine.demo.config import DemoConfig
            from vitrine.demo.loader import load_demo

            report = await load_demo(
                DemoConfig(n_products=200, n_shoppers=60, seed=11),
                profile_addresses=[profiles], gateway_address=servers["gateway"].address,
                segmentation_address=servers["segmentation"].address,
                recommendation_address=servers["recommendation"].address, progress=False,
                auth_token=auth_token)
            assert not report.errors, report.errors[:5]
        await add_protected_shoppers(profiles, auth_token=auth_token)
    except BaseException:
        await suite.close()
        raise
    return suite


def journeys_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("services.journeys.app") is not None


def _metadata(token: str) -> Sequence[tuple[str, str]] | None:
    return (("authorization", f"Bearer {token}"),) if token else None


async def add_protected_shoppers(profile_address: str, *, auth_token: str = "") -> None:
    async with grpc.aio.insecure_channel(profile_address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        md = _metadata(auth_token)
        for n, user in enumerate(PROTECTED_USERS):
            for i in range(4):
                event = common_pb2.Event(
                    event_id=f"{user}-e{i}", user_id=user, session_id=f"{user}-s", timestamp_ms=NOW_MS + i,
                    type=common_pb2.PRODUCT_VIEW if i < 3 else common_pb2.PURCHASE,
                    product_id=f"p-{n}-{i}", category="running", price=10.0 + i, order_id=f"{user}-o",
                    quantity=1)
                await stub.Track(profile_pb2.TrackRequest(event=event), timeout=10, metadata=md)
            await stub.SetConsent(profile_pb2.SetConsentRequest(
                user_id=user, consent=common_pb2.Consent(personalization=True, marketing=n % 2 == 0)),
                timeout=10, metadata=md)


async def protected_state(profile_address: str, *, auth_token: str = "") -> dict[str, object]:
    """What is stored about each protected shopper, without the parts computed at read time."""
    out: dict[str, object] = {}
    async with grpc.aio.insecure_channel(profile_address) as channel:
        stub = profile_pb2_grpc.ProfileServiceStub(channel)
        for user in PROTECTED_USERS:
            reply = await stub.ExportProfile(profile_pb2.ExportProfileRequest(user_id=user), timeout=10,
                                             metadata=_metadata(auth_token))
            doc = json.loads(reply.json)
            doc.pop("exported_ms", None)
            doc.pop("profile", None)  # the public view: decayed affinities and RFM scores as of now
            out[user] = doc
    return out
