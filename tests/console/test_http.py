"""The console's HTTP layer through Starlette's TestClient against the REAL services (profile,
segmentation, recommendation, gateway in-process, demo store loaded): login, CSRF, the
audit log, every page, and what an operator sees when a backend is down."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from pathlib import Path

import grpc
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from services.console.app import OPEN_PATHS, build_app
from tests.console.conftest import PASSWORD, csrf_of, log_in, scan_profiles
from tests.console.suite import Backends, LoopThread, unused_address
from vitrine.v1 import (
    common_pb2,
    gateway_pb2_grpc,
    journey_pb2,
    journey_pb2_grpc,
    profile_pb2,
    recommend_pb2,
    segment_pb2,
    segment_pb2_grpc,
)


def audit_lines(client: TestClient) -> list[dict[str, object]]:
    path = Path(client.app.state.console.audit.path)  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def post_routes(client: TestClient) -> list[str]:
    return [r.path for r in client.app.routes if isinstance(r, Route) and "POST" in (r.methods or ())]  # type: ignore[attr-defined]


def customer_with_alias(profiles: list[common_pb2.Profile]) -> common_pb2.Profile:
    return next(p for p in profiles if p.aliases and p.registered and p.event_count >= 3)


def test_no_page_without_login(app_client: TestClient) -> None:
    for route in app_client.app.routes:  # type: ignore[attr-defined]
        if not isinstance(route, Route) or route.path.startswith(OPEN_PATHS) or "{" in route.path:
            continue
        if "GET" in (route.methods or ()):
            reply = app_client.get(route.path, follow_redirects=False)
            assert reply.status_code == 303 and reply.headers["location"] == "/login", route.path
        else:
            assert app_client.post(route.path, data={}, follow_redirects=False).status_code == 401, route.path
    reply = app_client.get("/segments/size?id=vip", headers={"HX-Request": "true"})
    assert reply.status_code == 401 and reply.headers["HX-Redirect"] == "/login"
    assert app_client.get("/healthz").text == "ok"


def test_login_wrong_password_then_right_one(app_client: TestClient) -> None:
    token = csrf_of(app_client.get("/login").text)
    reply = app_client.post("/login", data={"operator": "ana", "password": "nope", "csrf_token": token})
    assert reply.status_code == 401 and "Wrong operator name or password" in reply.text
    assert app_client.get("/customers", follow_redirects=False).status_code == 303
    reply = app_client.post("/login", data={"operator": "ana", "password": PASSWORD, "csrf_token": token},
                            follow_redirects=False)
    assert reply.status_code == 303
    cookie = reply.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    assert app_client.get("/customers").status_code == 200
    assert audit_lines(app_client)[-1]["action"] == "login"


def test_login_without_csrf_token_is_refused(app_client: TestClient) -> None:
    app_client.get("/login")
    reply = app_client.post("/login", data={"operator": "ana", "password": PASSWORD})
    assert reply.status_code == 403


def test_repeated_failed_logins_are_limited(app_client: TestClient) -> None:
    token = csrf_of(app_client.get("/login").text)
    codes = [app_client.post("/login", data={"operator": "x", "password": "bad", "csrf_token": token}).status_code
             for _ in range(6)]
    assert codes == [401] * 5 + [429]
    reply = app_client.post("/login", data={"operator": "ana", "password": PASSWORD, "csrf_token": token})
    assert reply.status_code == 429  # even the right password, until the window passes


def test_every_action_refuses_a_missing_or_wrong_csrf_token(client: TestClient,
                                                           demo_profiles: list[common_pb2.Profile]) -> None:
    shopper = customer_with_alias(demo_profiles)
    before = len(audit_lines(client))
    routes = post_routes(client)
    assert {"/customers/consent", "/customers/erase", "/customers/export", "/segments/save",
            "/segments/delete", "/segments/audience.csv", "/segments/check", "/logout"} <= set(routes)
    form = {"user_id": shopper.user_id, "confirm": shopper.user_id, "segment_id": "vip", "rule": "visit_count > 1"}
    for path in routes:
        assert client.post(path, data=form).status_code == 403, path
        assert client.post(path, data={**form, "csrf_token": "forged"}).status_code == 403, path
        assert client.post(path, data=form, headers={"X-CSRF-Token": "forged"}).status_code == 403, path
    assert len(audit_lines(client)) == before  # nothing was done
    assert client.get("/customers", params={"q": shopper.user_id}).status_code == 200  # not erased, still logged in


def test_customer_page_shows_the_single_customer_view(client: TestClient,
                                                      demo_profiles: list[common_pb2.Profile]) -> None:
    shopper = customer_with_alias(demo_profiles)
    reply = client.get("/customers", params={"q": shopper.user_id})
    assert reply.status_code == 200
    page = reply.text
    assert f"<h1>{shopper.user_id} " in page and "registered" in page
    for label in ("First seen", "Last seen", "Visits", "Orders", "Total spend", "Average order", "Budget", "RFM"):
        assert f"<dt>{label}</dt>" in page
    assert page.count('<tr class="g-') >= 3  # timeline rows of stored events
    assert "product view" in page
    assert "What this shopper sees now" in page and "for_you" in page
    assert "registered</a>" in page  # the built-in segment, evaluated now
    assert 'id="affinity-data"' in page
    assert "Journey messages unavailable" not in page
    assert "Traceback" not in page


def test_an_alias_resolves_to_the_customer(client: TestClient, demo_profiles: list[common_pb2.Profile]) -> None:
    shopper = customer_with_alias(demo_profiles)
    reply = client.get("/customers", params={"q": shopper.aliases[0]})
    assert reply.status_code == 200
    assert f"<h1>{shopper.user_id} " in reply.text and "an alias of this profile" in reply.text


def test_unknown_shopper(client: TestClient) -> None:
    reply = client.get("/customers", params={"q": "never-seen-anywhere"})
    assert reply.status_code == 404 and "No shopper" in reply.text


def test_consent_change_is_applied_and_audited(client: TestClient, demo_profiles: list[common_pb2.Profile]) -> None:
    shopper = next(p for p in demo_profiles if p.consent.personalization and p.event_count >= 2)
    reply = client.post("/customers/consent", data={"user_id": shopper.user_id, "personalization": "on",
                                                    "csrf_token": client.csrf}, follow_redirects=False)  # type: ignore[attr-defined]
    assert reply.status_code == 303
    page = client.get(reply.headers["location"]).text
    assert "Consent saved" in page
    assert re.search(r"by ana: analytics off, marketing off, personalization on", page)  # the change history
    assert re.search(r'name="marketing"\s*>', page) and re.search(r'name="personalization" checked', page)
    entry = audit_lines(client)[-1]
    assert entry["action"] == "customer.consent" and entry["target"] == shopper.user_id
    assert entry["operator"] == "ana"
    assert entry["details"] == {"consent": {"personalization": True, "marketing": False, "analytics": False}}


def test_export_downloads_json_and_is_audited(client: TestClient, demo_profiles: list[common_pb2.Profile]) -> None:
    shopper = customer_with_alias(demo_profiles)
    reply = client.post("/customers/export", data={"user_id": shopper.user_id, "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("application/json")
    assert "attachment" in reply.headers["content-disposition"]
    doc = reply.json()
    assert doc["user_id"] == shopper.user_id and doc["events"]
    assert audit_lines(client)[-1]["action"] == "customer.export"


def test_erase_needs_the_typed_confirmation_then_the_shopper_is_gone(
        client: TestClient, demo_profiles: list[common_pb2.Profile]) -> None:
    shopper = [p for p in demo_profiles if p.aliases][-1]
    refused = client.post("/customers/erase", data={"user_id": shopper.user_id, "confirm": "wrong",
                                                    "csrf_token": client.csrf})  # type: ignore[attr-defined]
    assert refused.status_code == 400
    assert client.get("/customers", params={"q": shopper.user_id}).status_code == 200
    reply = client.post("/customers/erase", data={"user_id": shopper.user_id, "confirm": shopper.user_id,
                                                  "csrf_token": client.csrf}, follow_redirects=False)  # type: ignore[attr-defined]
    assert reply.status_code == 303
    gone = client.get(reply.headers["location"])
    assert gone.status_code == 404 and "Erased" in gone.text and "by ana" in gone.text
    assert client.get("/customers", params={"q": shopper.aliases[0]}).status_code == 404  # the alias too
    entry = audit_lines(client)[-1]
    assert entry["action"] == "customer.erase" and entry["target"] == shopper.user_id and entry["ok"] is True
    assert int(entry["details"]["events_deleted"]) >= 1  # type: ignore[index]
    assert "customer.erase" in client.get("/audit").text


def test_segments_page_sizes_and_offers(client: TestClient) -> None:
    page = client.get("/segments").text
    assert 'id="seg-vip"' in page and "Rule editor" in page and "Offers" in page
    size = client.get("/segments/size", params={"id": "registered"}, headers={"HX-Request": "true"})
    assert size.status_code == 200 and re.search(r"\d+ of \d+", size.text)


def test_rule_editor_shows_the_error_at_its_position_and_the_size(client: TestClient) -> None:
    headers = {"X-CSRF-Token": client.csrf, "HX-Request": "true"}  # type: ignore[attr-defined]
    bad = client.post("/segments/check", data={"rule": "visit_count >= and registered"}, headers=headers)
    assert bad.status_code == 200 and "Line 1, column" in bad.text and "^" in bad.text
    unknown = client.post("/segments/check", data={"rule": "no_such_field > 1"}, headers=headers)
    assert "Line 1, column 1" in unknown.text
    good = client.post("/segments/check", data={"rule": "visit_count >= 2"}, headers=headers)
    assert "Valid rule" in good.text and re.search(r"Matches <strong class=\"size\">\d+ of \d+", good.text)


def test_rule_edits_are_saved_deleted_and_audited(client: TestClient) -> None:
    form = {"segment_id": "console_test_loyal", "name": "Loyal", "rule": "visit_count >= 2", "priority": "3",
            "csrf_token": client.csrf}  # type: ignore[attr-defined]
    assert client.post("/segments/save", data=form, follow_redirects=False).status_code == 303
    assert 'id="seg-console_test_loyal"' in client.get("/segments").text
    refused = client.post("/segments/save", data={**form, "rule": "visit_count >="})
    assert refused.status_code == 400 and "Segment not saved" in refused.text
    assert client.post("/segments/delete", data={"segment_id": "console_test_loyal", "csrf_token": client.csrf},  # type: ignore[attr-defined]
                       follow_redirects=False).status_code == 303
    assert 'id="seg-console_test_loyal"' not in client.get("/segments").text
    actions = [(e["action"], e["ok"]) for e in audit_lines(client)[-3:]]
    assert actions == [("segment.put", True), ("segment.put", False), ("segment.delete", True)]


def test_audience_exports_download_as_csv_and_are_audited(client: TestClient, loop_thread: LoopThread,
                                                          backends: Backends,
                                                          demo_profiles: list[common_pb2.Profile]) -> None:
    csrf = client.csrf  # type: ignore[attr-defined]
    reply = client.post("/segments/audience.csv", data={"segment_id": "registered", "csrf_token": csrf})
    assert reply.status_code == 200 and "attachment" in reply.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(reply.text)))
    registered = {p.user_id for p in demo_profiles if p.registered}
    assert rows and {row["user_id"] for row in rows} <= registered | {p.customer_id for p in demo_profiles}
    assert audit_lines(client)[-1]["action"] == "audience.export"
    # The rule editor's button exports the typed rule, only shoppers with marketing consent: one
    # shopper gets it first (through the console), so the audience is known to hold them.
    candidates = [p for p in demo_profiles if p.visit_count >= 1 and p.registered]
    opted_in = candidates[len(candidates) // 2]  # one no other test erases or changes
    assert client.post("/customers/consent", data={"user_id": opted_in.user_id, "marketing": "on",
                                                   "personalization": "on", "csrf_token": csrf}).status_code == 200
    consenting = client.post("/segments/audience.csv", data={
        "export_rule": "1", "segment_id": "typed-but-ignored", "rule": "visit_count >= 1",
        "require_marketing_consent": "on", "csrf_token": csrf})
    assert consenting.status_code == 200
    # Other tests change consent too (the browser test flips one shopper's): read it as it is now.
    marketing = {p.user_id for p in scan_profiles(loop_thread, backends) if p.consent.marketing}
    exported = {row["user_id"] for row in csv.DictReader(io.StringIO(consenting.text))}
    assert opted_in.user_id in exported and exported <= marketing
    entry = audit_lines(client)[-1]
    assert entry["target"] == "visit_count >= 1" and entry["details"]["require_marketing_consent"] is True  # type: ignore[index]
    bad = client.post("/segments/audience.csv", data={"export_rule": "1", "rule": "visit_count >=",
                                                      "csrf_token": csrf})
    assert bad.status_code == 400 and "Audience not exported" in bad.text


def test_catalog_journeys_experiments_and_audit_pages(client: TestClient) -> None:
    catalog = client.get("/catalog")
    assert catalog.status_code == 200 and "Trending now" in catalog.text and "Model" in catalog.text
    journeys = client.get("/journeys")
    assert journeys.status_code == 200 and "Journeys unavailable" not in journeys.text
    for journey_id in ("abandoned-cart", "welcome", "win-back"):  # the demo's journeys, with statistics
        assert f"<strong>{journey_id}</strong>" in journeys.text
    assert "statistics unavailable" not in journeys.text
    experiments = client.get("/experiments")
    assert experiments.status_code == 200 and "Traceback" not in experiments.text
    audit = client.get("/audit")
    assert audit.status_code == 200 and "login" in audit.text


def test_a_backend_down_shows_a_banner_never_a_stack_trace(backends: Backends, tmp_path: Path,
                                                           demo_profiles: list[common_pb2.Profile]) -> None:
    config = backends.console_config(data_dir=str(tmp_path), gateway_address=unused_address(),
                                     segmentation_address=unused_address(),
                                     recommendation_address=unused_address())
    with TestClient(build_app(config), base_url="http://127.0.0.1") as client:
        log_in(client)
        customer = client.get("/customers", params={"q": demo_profiles[0].user_id})
        assert customer.status_code == 503 and "gateway service is unavailable" in customer.text
        segments = client.get("/segments")
        assert segments.status_code == 200 and "Segments unavailable" in segments.text
        catalog = client.get("/catalog")
        assert catalog.status_code == 200 and "recommendation service is unavailable" in catalog.text
        for reply in (customer, segments, catalog):
            assert "Traceback" not in reply.text and 'role="alert"' in reply.text


def test_unknown_path_and_security_headers(client: TestClient) -> None:
    reply = client.get("/no/such/page")
    assert reply.status_code == 404 and "There is no such page" in reply.text
    page = client.get("/customers")
    assert page.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_production_mode_needs_a_password(backends: Backends, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="production mode needs"):
        build_app(backends.console_config(data_dir=str(tmp_path), password="", production=True))
    dev = build_app(backends.console_config(data_dir=str(tmp_path), password=""))
    with TestClient(dev, base_url="http://127.0.0.1") as client:
        assert "Development mode" in client.get("/login").text


def test_experiments_page_and_the_shoppers_assignment(client: TestClient, loop_thread: LoopThread,
                                                      backends: Backends,
                                                      demo_profiles: list[common_pb2.Profile]) -> None:
    experiment = segment_pb2.Experiment(
        experiment_id="console-home-test", name="Home: trending vs for you", slot_id="trending",
        variants=[segment_pb2.Variant(variant_id="control", weight=1, strategy=recommend_pb2.TRENDING),
                  segment_pb2.Variant(variant_id="for-you", weight=1, strategy=recommend_pb2.FOR_YOU)])

    async def segments(method: str, request: object) -> object:
        async with grpc.aio.insecure_channel(backends.segmentation.address) as channel:
            return await getattr(segment_pb2_grpc.SegmentServiceStub(channel), method)(request, timeout=5)

    loop_thread.run(segments("PutExperiment", segment_pb2.PutExperimentRequest(experiment=experiment)))
    try:
        page = client.get("/experiments")
        assert page.status_code == 200 and "console-home-test" in page.text and "Home: trending vs for you" in page.text
        assert "conversion (95 % CI)" in page.text
        chart = re.search(r'<script type="application/json" id="ci-1">(.*?)</script>', page.text, re.S)
        assert chart and json.loads(chart.group(1))["labels"] == ["control", "for-you"]  # valid JSON, NaN-free
        shopper = customer_with_alias(demo_profiles)
        customer = client.get("/customers", params={"q": shopper.user_id}).text
        assert re.search(r"<td>console-home-test</td><td>(control|for-you)</td><td>trending</td>", customer)
    finally:
        loop_thread.run(segments("DeleteExperiment",
                                 segment_pb2.DeleteExperimentRequest(experiment_id="console-home-test")))


def test_journey_messages_are_on_the_shoppers_timeline(client: TestClient, loop_thread: LoopThread,
                                                       backends: Backends) -> None:
    """A new visitor opts in to marketing and registers: the demo's welcome journey (no delay) sends
    a message, which the customer page shows on the timeline."""
    visitor, customer = "console-journey-visitor", "console-journey-customer"

    async def register_and_wait() -> None:
        async with grpc.aio.insecure_channel(backends.gateway.address) as gw, \
                grpc.aio.insecure_channel(backends.journeys.address) as jr:
            gateway = gateway_pb2_grpc.PersonalizationServiceStub(gw)
            await gateway.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
                event_id=f"{visitor}-0", user_id=visitor, type=common_pb2.PAGE_VIEW,
                timestamp_ms=int(time.time() * 1000))), timeout=5)
            await gateway.SetConsent(profile_pb2.SetConsentRequest(user_id=visitor, consent=common_pb2.Consent(
                personalization=True, marketing=True)), timeout=5)
            await gateway.Identify(profile_pb2.IdentifyRequest(anonymous_id=visitor, customer_id=customer),
                                   timeout=5)
            stub = journey_pb2_grpc.JourneyServiceStub(jr)
            deadline = asyncio.get_running_loop().time() + 60  # the journeys service follows the feed
            while asyncio.get_running_loop().time() < deadline:
                reply = await stub.ListUserMessages(journey_pb2.ListUserMessagesRequest(user_id=customer, limit=5),
                                                    timeout=5)
                if reply.messages:
                    return
                await asyncio.sleep(0.2)
            raise AssertionError("the welcome journey sent no message within 60 s")

    loop_thread.run(register_and_wait(), timeout=90)
    page = client.get("/customers", params={"q": visitor})
    assert page.status_code == 200 and 'class="g-journey"' in page.text and "welcome" in page.text


def test_only_the_journeys_service_down(backends: Backends, tmp_path: Path,
                                        demo_profiles: list[common_pb2.Profile]) -> None:
    config = backends.console_config(data_dir=str(tmp_path), journeys_address=unused_address())
    with TestClient(build_app(config), base_url="http://127.0.0.1") as client:
        log_in(client)
        customer = client.get("/customers", params={"q": customer_with_alias(demo_profiles).user_id})
        assert customer.status_code == 200 and "Journey messages unavailable" in customer.text
        assert "What this shopper sees now" in customer.text  # the rest of the page is there
        journeys = client.get("/journeys")
        assert journeys.status_code == 200 and "Journeys unavailable" in journeys.text
