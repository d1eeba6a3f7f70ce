"""With a caller token configured, every RPC of every service (found from the descriptors, so a
new RPC is covered) refuses a missing, wrong or scheme-less token with UNAUTHENTICATED; health
and reflection stay open. With TLS between the services (certificates made like the k8s overlay's
`vitrine-tls` Secret: a CA and a server certificate for localhost/127.0.0.1) the gateway
personalizes through TLS backends, and a plaintext caller is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.channel import open_channel
from tests.reliability.fuzz import methods_of
from tests.reliability.inprocess import InProcessSuite, journeys_available, start_inprocess_suite
from vitrine.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, profile_pb2

TOKEN = "s3cret-token"
SERVICES = {
    "profile": "vitrine.v1.ProfileService",
    "segmentation": "vitrine.v1.SegmentService",
    "recommendation": "vitrine.v1.RecommendService",
    "gateway": "vitrine.v1.PersonalizationService",
}
if journeys_available():
    SERVICES["journeys"] = "vitrine.v1.JourneyService"
BAD_HEADERS = [None, ("authorization", "Bearer wrong"), ("authorization", TOKEN), ("authorization", "")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def suite(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessSuite]:
    running = await start_inprocess_suite(Path(tmp_path_factory.mktemp("sec")), with_demo=False,
                                          auth_token=TOKEN)
    yield running
    await running.close()


async def _call(channel: grpc.aio.Channel, path: str, client_streaming: bool, server_streaming: bool,
                metadata: tuple[tuple[str, str], ...] | None) -> grpc.StatusCode:
    try:
        if client_streaming and server_streaming:
            async for _ in channel.stream_stream(path)(iter([b""]), timeout=5, metadata=metadata):
                pass
        elif client_streaming:
            await channel.stream_unary(path)(iter([b""]), timeout=5, metadata=metadata)
        elif server_streaming:
            async for _ in channel.unary_stream(path)(b"", timeout=5, metadata=metadata):
                pass
        else:
            await channel.unary_unary(path)(b"", timeout=5, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", list(SERVICES))
async def test_every_rpc_refuses_a_missing_or_wrong_token(suite: InProcessSuite, name: str) -> None:
    methods = methods_of(SERVICES[name])
    refused = 0
    async with grpc.aio.insecure_channel(suite.address(name)) as channel:
        for method in methods:
            path = f"/{SERVICES[name]}/{method.name}"
            for header in BAD_HEADERS:
                metadata = (header,) if header else None
                code = await _call(channel, path, method.client_streaming, method.server_streaming, metadata)
                assert code is grpc.StatusCode.UNAUTHENTICATED, f"{path} with {header}: {code.name}"
                refused += 1
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert refused == len(methods) * len(BAD_HEADERS)


@pytest.mark.asyncio(loop_scope="module")
async def test_the_right_token_is_let_through(suite: InProcessSuite) -> None:
    async with open_channel(suite.address("gateway"), auth_token=TOKEN) as channel:
        stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
        event = common_pb2.Event(event_id="t1", user_id="sec-u", type=common_pb2.PAGE_VIEW)
        await stub.Track(profile_pb2.TrackRequest(event=event), timeout=10)
        profile = await stub.GetProfile(profile_pb2.GetProfileRequest(user_id="sec-u"), timeout=10)
        assert profile.event_count == 1
        # Without the token, the same shopper's data is refused, not returned.
    async with grpc.aio.insecure_channel(suite.address("gateway")) as plain:
        err_code = await _call(plain, "/vitrine.v1.PersonalizationService/GetProfile", False, False, None)
        assert err_code is grpc.StatusCode.UNAUTHENTICATED


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for localhost and 127.0.0.1 (ca.crt, tls.crt, tls.key)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    ca_key, ca, key, csr, cert = (directory / n for n in ("ca.key", "ca.crt", "tls.key", "tls.csr", "tls.crt"))
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "2", "-subj", "/CN=vitrine-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=localhost")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return ca, cert, key


async def test_tls_between_services(tmp_path: Path) -> None:
    from services.common.server import build_server
    from services.gateway.app import GatewayService
    from services.gateway.config import GatewayConfig
    from services.profile.app import build_service as build_profile
    from services.profile.config import ProfileConfig
    from services.recommendation.app import build_service as build_recommendation
    from services.recommendation.config import RecommendationConfig
    from services.segmentation.app import build_service as build_segmentation
    from services.segmentation.config import SegmentationConfig

    ca, cert, key = make_certificates(tmp_path)
    tls = {"tls_cert_file": str(cert), "tls_key_file": str(key), "tls_ca_file": str(ca)}
    servers = []
    try:
        pc = ProfileConfig(port=0, data_dir=str(tmp_path / "p"), purge_interval_seconds=0, **tls)  # type: ignore[arg-type]
        servers.append(profile := await build_server(pc, build_profile(pc)))
        address = f"localhost:{profile.port}"
        sc = SegmentationConfig(port=0, data_dir=str(tmp_path / "s"), profile_addresses=address, **tls)  # type: ignore[arg-type]
        servers.append(seg := await build_server(sc, build_segmentation(sc)))
        rc = RecommendationConfig(port=0, data_dir=str(tmp_path / "r"), snapshot_seconds=0,  # type: ignore[arg-type]
                                  profile_addresses=address, **tls)
        servers.append(rec := await build_server(rc, build_recommendation(rc)))
        gc = GatewayConfig(port=0, profile_addresses=address, segmentation_address=f"localhost:{seg.port}",  # type: ignore[arg-type]
                           recommendation_address=f"localhost:{rec.port}", deadline_ms=2000, **tls)
        servers.append(gw := await build_server(gc, GatewayService(gc)))
        async with open_channel(f"localhost:{gw.port}", tls_ca_file=str(ca)) as channel:
            stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
            event = common_pb2.Event(event_id="tls-1", user_id="tls-u", type=common_pb2.PAGE_VIEW)
            await stub.Track(profile_pb2.TrackRequest(event=event), timeout=10)
            await stub.SetConsent(profile_pb2.SetConsentRequest(
                user_id="tls-u", consent=common_pb2.Consent(personalization=True)), timeout=10)
            reply = await stub.Personalize(gateway_pb2.PersonalizeRequest(user_id="tls-u", page_type="home"),
                                           timeout=10)
            # The profile came back over TLS: the shopper is known (no unknown_user fallback).
            assert "unknown_user" not in reply.fallback_reason, reply.fallback_reason
            assert "device" not in reply.fallback_reason
        async with grpc.aio.insecure_channel(f"localhost:{gw.port}") as plain:
            code = await _call(plain, "/vitrine.v1.PersonalizationService/Personalize", False, False, None)
            assert code is grpc.StatusCode.UNAVAILABLE  # a plaintext caller cannot even connect
    finally:
        for server in reversed(servers):
            await server.stop(0)
