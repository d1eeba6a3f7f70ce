"""The real console in headless Chromium (Debian's `chromium`, driven by Playwright) against the
real services with the demo store: log in, find a demo customer and see their timeline,
segments and recommendations, change consent, type a bad rule and see the error, export an
audience, erase a test shopper. Screenshots go to docs/console-*.png (linked from the README).

Skips, saying why, where Playwright or Chromium is absent (`.ci/run` installs both)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvicorn

from services.console.app import build_app
from tests.console.conftest import PASSWORD
from tests.console.suite import Backends, LoopThread
from vitrine.v1 import common_pb2, gateway_pb2_grpc, profile_pb2

playwright_sync = pytest.importorskip("playwright.sync_api", reason="pip package playwright is not installed")

CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
# Screenshots: into docs/ (committed, linked from the README) only when asked, so a test run does
# not rewrite tracked files: VITRINE_CONSOLE_SCREENSHOTS=1 pytest tests/console/test_browser.py
DOCS = Path(__file__).resolve().parents[2] / "docs"
SCREENSHOTS_TO_DOCS = os.environ.get("VITRINE_CONSOLE_SCREENSHOTS", "") not in ("", "0")
# As the machine notes advise for a closed network: no background connections, no sandbox as root.
CHROMIUM_ARGS = ["--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000

if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def console_url(loop_thread: LoopThread, backends: Backends, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[str]:
    config = backends.console_config(data_dir=str(tmp_path_factory.mktemp("console-browser")))
    server = uvicorn.Server(uvicorn.Config(build_app(config), log_config=None, access_log=False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    async def start() -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        return task

    task = loop_thread.run(start(), timeout=30)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True

    async def stop() -> None:
        await task

    loop_thread.run(stop(), timeout=30)
    sock.close()


def track_test_shopper(loop_thread: LoopThread, backends: Backends, user_id: str) -> None:
    async def track() -> None:
        async with grpc.aio.insecure_channel(backends.gateway.address) as channel:
            stub = gateway_pb2_grpc.PersonalizationServiceStub(channel)
            for i, kind in enumerate((common_pb2.PAGE_VIEW, common_pb2.SEARCH)):
                await stub.Track(profile_pb2.TrackRequest(event=common_pb2.Event(
                    event_id=f"{user_id}-{i}", user_id=user_id, type=kind, query="tent",
                    timestamp_ms=backends.now_ms - 1000 + i, context=common_pb2.Context(device_type="mobile"))),
                    timeout=5)

    loop_thread.run(track(), timeout=30)


@pytest.fixture(scope="module")
def page(console_url: str) -> Iterator[Any]:
    with playwright_sync.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                     args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        tab = context.new_page()
        tab.set_default_timeout(TIMEOUT_MS)
        yield tab
        context.close()
        browser.close()


def test_operator_journey_in_a_real_browser(page: Any, console_url: str, loop_thread: LoopThread,
                                            backends: Backends, demo_profiles: list[common_pb2.Profile],
                                            tmp_path: Path) -> None:
    expect = playwright_sync.expect
    shots = DOCS if SCREENSHOTS_TO_DOCS else tmp_path
    shots.mkdir(exist_ok=True)
    top = {"x": 0, "y": 0, "width": 1400, "height": 1900}

    # No page without a login.
    page.goto(f"{console_url}/segments")
    expect(page).to_have_url(f"{console_url}/login")
    page.fill("input[name=operator]", "ana")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    expect(page.locator(".banner.error")).to_contain_text("Wrong operator name or password")
    page.fill("input[name=operator]", "ana")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{console_url}/customers")

    # A demo customer: profile card, timeline, segments, what they see now, the affinity chart.
    shopper = max((p for p in demo_profiles if p.registered and p.aliases and p.category_affinity),
                  key=lambda p: (p.purchase_count, p.event_count))
    page.fill("input[name=q]", shopper.aliases[0])  # found by an alias
    page.click("form.search button")
    expect(page.locator("section.profile h1")).to_contain_text(shopper.user_id)
    assert page.locator("table.timeline tr[class^=g-]").count() >= 3
    expect(page.locator("a.chip", has_text="registered")).to_be_visible()
    expect(page.locator(".page h3", has_text="home")).to_be_visible()
    assert page.locator(".page ol.items li").count() >= 4
    page.wait_for_function("() => window.Chart && Chart.getChart('affinity-chart') !== undefined")
    page.screenshot(path=str(shots / "console-customer.png"), full_page=True, clip=top)

    # Change consent (marketing flipped), saved and shown with its time.
    marketing = page.locator("#consent-form input[name=marketing]")
    was = marketing.is_checked()
    marketing.set_checked(not was)
    page.click("#consent-form button[type=submit]")
    expect(page.locator(".banner.ok")).to_contain_text("Consent saved")
    assert page.locator("#consent-form input[name=marketing]").is_checked() is (not was)
    expect(page.locator("#consent-form")).not_to_contain_text("never")

    # The rule editor: a bad rule shows its error at its position; a good one its size, as typed.
    page.click("nav a[href='/segments']")
    rule = page.locator("#rule")
    rule.fill('visit_count >= 2 and events("PURCHASE", days=30) == ')
    expect(page.locator("#rule-check .rule-error")).to_contain_text("Line 1, column")
    rule.fill('visit_count >= 2 and events("PURCHASE", days=30) == 0')
    expect(page.locator("#rule-check .rule-ok")).to_contain_text("Matches")
    expect(page.locator("#seg-registered .size")).to_be_visible()  # sizes filled in by htmx
    page.screenshot(path=str(shots / "console-segments.png"), full_page=True, clip=top)

    # Export an audience as CSV (a download, and an audit line).
    with page.expect_download() as download_info:
        page.click("#seg-registered td.actions button[type=submit]")
    csv_path = download_info.value.path()
    assert Path(csv_path).read_text().splitlines()[0].startswith("user_id,customer_id")

    # Erase a test shopper, with the typed confirmation; afterwards the page says they are gone.
    test_id = "console-browser-test-shopper"
    track_test_shopper(loop_thread, backends, test_id)
    page.goto(f"{console_url}/customers?q={test_id}")
    expect(page.locator("section.profile h1")).to_contain_text(test_id)
    page.click("details.danger summary")
    page.fill("#erase-form input[name=confirm]", test_id)
    page.click("#erase-form button[type=submit]")
    expect(page.locator("section.gone h1")).to_contain_text(f"No shopper “{test_id}”")
    expect(page.locator("section.gone .banner.ok")).to_contain_text("by ana")

    # Everything above is in the audit log.
    page.click("nav a[href='/audit']")
    audit = page.locator("table.audit")
    for action in ("login", "customer.consent", "audience.export", "customer.erase"):
        expect(audit).to_contain_text(action)
    page.screenshot(path=str(shots / "console-audit.png"))
    if SCREENSHOTS_TO_DOCS:
        from PIL import Image  # pillow comes with matplotlib

        for path in shots.glob("console-*.png"):  # a 256-colour palette: a third of the bytes, same look
            Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
