"""The web console in headless Chromium, driven by Playwright, against the real control app.

The app is served by uvicorn (:class:`galpipe.control.service.ControlService`) on 127.0.0.1 with
the real :class:`~galpipe.control.actions.ControlActions` on the test database and the
recording, schema-validating fake Kubernetes API seeded with the chart's render. An operator and
a viewer log in with tokens; what the browser shows, what reaches the database and the audit
log, and where the tokens do *not* end up (page, URLs, console, storage, server logs) are
checked. Each run saves screenshots to pytest's ``tmp_path`` (and to ``GALPIPE_SCREENSHOT_DIR``
when set).
"""

from __future__ import annotations

import http.server
import logging
import os
import re
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from psycopg_pool import ConnectionPool

from galpipe.control.actions import ControlActions
from galpipe.control.app import API_PREFIX, CONSOLE_CSP, create_app
from galpipe.control.auth import Authenticator, Authorizer
from galpipe.control.kube import Identity
from galpipe.control.service import ControlService
from galpipe.control.sessions import SESSION_COOKIE, SessionSigner
from galpipe.db.queue import TaskQueue
from tests.integration.control.cluster import CHART_IMAGE, NAMESPACE, seeded_objects
from tests.kube_fake import FakeKube
from tests.probes import is_paused
from tests.tools import require_tool

OPERATOR_TOKEN = "op-" + secrets.token_urlsafe(24)
VIEWER_TOKEN = "view-" + secrets.token_urlsafe(24)
TOKENS = (OPERATOR_TOKEN, VIEWER_TOKEN)
OPERATOR = Identity("oscar", ("galpipe-operators", "system:authenticated"), uid="u-oscar")
VIEWER = Identity("vera", ("galpipe-viewers", "system:authenticated"), uid="u-vera")
PINNED_IMAGE = "ghcr.io/galpipe/galpipe:141-0abc123"
#: Chromium in a container: no sandbox, no GPU, and nothing fetched from the network.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _cluster() -> FakeKube:
    """The chart's Deployments and ScaledObjects, its HelmRelease and a few pods."""
    return FakeKube(
        seeded_objects(),
        tokens={OPERATOR_TOKEN: OPERATOR, VIEWER_TOKEN: VIEWER},
        grants={"galpipe-operators": ["*"], "galpipe-viewers": ["get", "list"]},
        namespace=NAMESPACE,
    )


@dataclass
class Console:
    """The control app served on a port of 127.0.0.1, and what it talks to."""

    url: str
    pool: ConnectionPool
    kube: FakeKube

    def audit_rows(self) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:
            return conn.execute(
                "SELECT user_name, action, pipeline, reason, result FROM audit_log ORDER BY id"
            ).fetchall()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_tool("chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def console(pool: ConnectionPool, caplog: pytest.LogCaptureFixture) -> Iterator[Console]:
    caplog.set_level(logging.DEBUG)
    kube = _cluster()
    actions = ControlActions(
        pool, kube, namespace=NAMESPACE, release="galpipe", helm_release="galpipe"
    )
    app = create_app(
        actions,
        Authenticator(kube),
        Authorizer(kube, NAMESPACE),
        SessionSigner(secrets.token_urlsafe(32)),
    )
    port = _free_port()
    service = ControlService(app, lambda: None, host="127.0.0.1", port=port)
    thread = threading.Thread(target=service.run, name="control-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not service.server.started:
        assert thread.is_alive(), "the control API stopped while starting"
        assert time.monotonic() < deadline, "the control API did not start"
        time.sleep(0.02)
    yield Console(f"http://127.0.0.1:{port}", pool, kube)
    service.request_stop()
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert kube.invalid_bodies == []
    # Whatever happened, no token reached the server's logs (messages or structured fields).
    for record in caplog.records:
        logged = f"{record.getMessage()} {record.__dict__!r}"
        for token in TOKENS:
            assert token not in logged, f"a token was logged by {record.name}"


@dataclass
class Recorder:
    """What a page did: the URLs it requested and visited, its console and its errors."""

    requests: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def page(browser: Browser) -> Iterator[tuple[Page, Recorder]]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    recorder = Recorder()
    opened.on("request", lambda request: recorder.requests.append(request.url))
    opened.on("framenavigated", lambda frame: recorder.navigations.append(frame.url))
    opened.on("console", lambda message: recorder.console.append(message.text))
    opened.on("pageerror", lambda error: recorder.errors.append(str(error)))
    yield opened, recorder
    context.close()


def login(page: Page, console: Console, token: str) -> None:
    page.goto(f"{console.url}/login")
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.url}/")
    expect(page.locator("#whoami")).to_contain_text("Signed in as")


def pipeline_card(page: Page, name: str) -> Any:
    return page.locator(f'section[data-pipeline="{name}"]')


def save_screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    """A full-page PNG in ``tmp_path``, copied to ``GALPIPE_SCREENSHOT_DIR`` when set."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if directory := os.environ.get("GALPIPE_SCREENSHOT_DIR"):
        Path(directory).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(directory) / path.name)
    return path


def assert_no_token_in_the_browser(page: Page, recorder: Recorder) -> None:
    html = page.content()
    storage = page.evaluate(
        "() => JSON.stringify([document.cookie, {...localStorage}, {...sessionStorage}])"
    )
    for token in TOKENS:
        assert token not in html
        assert token not in storage
        assert all(token not in url for url in recorder.requests + recorder.navigations)
        assert all(token not in text for text in recorder.console)
    # The session cookie is HttpOnly: the page's scripts cannot read it.
    assert SESSION_COOKIE not in page.evaluate("() => document.cookie")


# -- the operator's way through ------------------------------------------------------------------


def test_an_operator_logs_in_pauses_a_pipeline_and_finds_it_in_the_audit_log(
    console: Console, page: tuple[Page, Recorder], tmp_path: Path
) -> None:
    browser_page, recorder = page
    response = browser_page.goto(f"{console.url}/")
    assert response is not None
    assert response.headers["content-security-policy"] == CONSOLE_CSP
    # No session yet: the console sends the visitor to the login page.
    browser_page.wait_for_url(f"{console.url}/login")

    browser_page.get_by_label("Bearer token").fill(OPERATOR_TOKEN)
    browser_page.get_by_role("button", name="Sign in").click()
    browser_page.wait_for_url(f"{console.url}/")
    expect(browser_page.locator("#whoami")).to_have_text(
        "Signed in as oscar (galpipe-operators, system:authenticated)"
    )

    fetch = pipeline_card(browser_page, "fetch")
    expect(fetch.get_by_role("heading", name="fetch")).to_be_visible()
    expect(pipeline_card(browser_page, "radon")).to_be_visible()
    # Every pipeline galpipe knows has its card; those the chart does not deploy have no
    # workload to show.
    for name in ("morphology", "photoz"):
        card = pipeline_card(browser_page, name)
        expect(card.get_by_role("heading", name=name)).to_be_visible()
        expect(card).to_contain_text("Replicas")
        expect(card).not_to_contain_text("desired")
    expect(fetch).to_contain_text("2 desired, 1 ready")
    expect(fetch).to_contain_text(CHART_IMAGE)
    not_ready = fetch.locator("table.pods tr", has_text="galpipe-fetch-b")
    expect(not_ready).to_contain_text("not ready")
    expect(not_ready.locator("td.num")).to_have_text("3")
    expect(browser_page.locator("#overrides")).to_be_hidden()

    pause = fetch.get_by_role("button", name="Pause", exact=True)
    expect(pause).to_be_disabled()
    fetch.get_by_label("Reason").fill("   ")
    expect(pause).to_be_disabled()  # blanks are no reason
    fetch.get_by_label("Reason").fill("survey maintenance window")
    expect(pause).to_be_enabled()
    pause.click()

    expect(fetch.locator(".outcome")).to_contain_text("Paused fetch (audit record 1)")
    expect(fetch.get_by_role("button", name="Resume")).to_be_visible()
    expect(fetch.locator(".badges")).to_contain_text("paused")
    expect(fetch.get_by_label("Reason")).to_have_value("")
    banner = browser_page.locator("#overrides")
    expect(banner).to_contain_text("fetch: paused by oscar")
    expect(banner).to_contain_text("survey maintenance window")
    assert is_paused(console.pool, "fetch")
    assert not is_paused(console.pool, "radon")
    save_screenshot(browser_page, tmp_path, "console-pipelines")

    browser_page.get_by_role("link", name="Audit log").click()
    browser_page.wait_for_url(f"{console.url}/audit")
    expect(browser_page.locator("#overrides")).to_contain_text("fetch: paused by oscar")
    rows = browser_page.locator("#audit-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td")).to_have_text(
        [re.compile(r"\d{4}-\d\d-\d\d .*Z"), "oscar", "pause", "fetch",
         "survey maintenance window", "ok", re.compile("details")]
    )  # fmt: skip
    save_screenshot(browser_page, tmp_path, "console-audit")

    browser_page.get_by_label("User").fill("vera")
    browser_page.get_by_role("button", name="Filter").click()
    expect(browser_page.locator("#audit-summary")).to_have_text(
        "No audit records matching user “vera”."
    )
    expect(rows).to_have_count(0)
    browser_page.get_by_label("User").fill("oscar")
    browser_page.get_by_label("Action").select_option("pause")
    browser_page.get_by_label("Pipeline").fill("fetch")
    browser_page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    assert browser_page.url == f"{console.url}/audit?user=oscar&action=pause&pipeline=fetch"
    # A shared link of a filtered view opens filtered.
    browser_page.goto(f"{console.url}/audit?action=resume")
    expect(browser_page.locator("#audit-summary")).to_have_text(
        "No audit records matching action “resume”."
    )

    assert_no_token_in_the_browser(browser_page, recorder)
    assert console.audit_rows() == [("oscar", "pause", "fetch", "survey maintenance window", "ok")]

    browser_page.get_by_role("button", name="Log out").click()
    browser_page.wait_for_url(f"{console.url}/login")
    browser_page.goto(f"{console.url}/audit")
    browser_page.wait_for_url(f"{console.url}/login")

    # Everything the console loaded came from the process itself.
    assert recorder.requests
    assert all(url.startswith(console.url + "/") for url in recorder.requests)
    assert recorder.errors == []


def test_a_viewer_sees_the_pipelines_and_is_told_plainly_it_may_not_pause(
    console: Console, page: tuple[Page, Recorder]
) -> None:
    browser_page, recorder = page
    login(browser_page, console, VIEWER_TOKEN)
    expect(browser_page.locator("#whoami")).to_contain_text("vera")
    fetch = pipeline_card(browser_page, "fetch")
    fetch.get_by_label("Reason").fill("just looking")
    fetch.get_by_role("button", name="Pause", exact=True).click()
    error = fetch.get_by_role("alert")
    expect(error).to_contain_text("you may not pause fetch")
    expect(error).to_contain_text("vera may not pause pipelines.galpipe.io")
    assert not is_paused(console.pool, "fetch")
    assert console.audit_rows() == []
    # Reading the audit log needs only `list`, which a viewer has.
    browser_page.get_by_role("link", name="Audit log").click()
    expect(browser_page.locator("#audit-summary")).to_have_text("No audit records.")
    assert_no_token_in_the_browser(browser_page, recorder)
    assert recorder.errors == []


def test_a_wrong_token_is_refused_and_cleared_from_the_field(
    console: Console, page: tuple[Page, Recorder]
) -> None:
    browser_page, recorder = page
    browser_page.goto(f"{console.url}/login")
    wrong = "forged-" + secrets.token_urlsafe(16)
    browser_page.get_by_label("Bearer token").fill(wrong)
    browser_page.get_by_role("button", name="Sign in").click()
    expect(browser_page.locator("#login-error")).to_have_text(
        "The cluster did not accept this token."
    )
    expect(browser_page.get_by_label("Bearer token")).to_have_value("")
    assert browser_page.url == f"{console.url}/login"
    assert wrong not in browser_page.content()
    assert all(wrong not in url for url in recorder.requests + recorder.navigations)


# -- overrides on every page ---------------------------------------------------------------------


def test_a_pinned_image_is_announced_on_every_page_until_released(
    console: Console, page: tuple[Page, Recorder], tmp_path: Path
) -> None:
    browser_page, recorder = page
    login(browser_page, console, OPERATOR_TOKEN)
    fetch = pipeline_card(browser_page, "fetch")
    pin = fetch.get_by_role("button", name="Pin image")
    fetch.get_by_label("Reason").fill("0.1.1 corrupts cutouts; back to 141")
    expect(pin).to_be_disabled()  # an image is needed too
    fetch.get_by_label("Image").fill(PINNED_IMAGE)
    pin.click()
    expect(fetch.locator(".outcome")).to_contain_text("Pinned the image of fetch")

    announcement = f"fetch: image {PINNED_IMAGE} pinned by oscar: GitOps suspended until released"
    banner = browser_page.locator("#overrides")
    expect(banner).to_contain_text(announcement)
    expect(fetch.locator(".badges")).to_contain_text("image pinned")
    save_screenshot(browser_page, tmp_path, "console-pinned")
    browser_page.get_by_role("link", name="Audit log").click()
    expect(browser_page.locator("#overrides")).to_contain_text(announcement)
    browser_page.get_by_role("link", name="Pipelines").click()

    fetch.get_by_label("Reason").fill("fixed release is out")
    fetch.get_by_role("button", name="Unpin: back to Git").click()
    expect(fetch.locator(".outcome")).to_contain_text("Unpinned fetch: Git is in control again")
    expect(banner).to_be_hidden()
    assert [(r[1], r[4]) for r in console.audit_rows()] == [("pin", "ok"), ("unpin", "ok")]
    assert recorder.errors == []


def test_an_operator_holds_releases_and_restarts_with_a_reason_each(
    console: Console, page: tuple[Page, Recorder]
) -> None:
    browser_page, recorder = page
    login(browser_page, console, OPERATOR_TOKEN)
    radon = pipeline_card(browser_page, "radon")
    hold = radon.get_by_role("button", name="Hold", exact=True)
    radon.get_by_label("Replicas").fill("3")
    expect(hold).to_be_disabled()  # a number is not a reason
    radon.get_by_label("Reason").fill("load test of the survey mirror")
    hold.click()
    expect(radon.locator(".outcome")).to_contain_text("Holding radon at 3 replicas")
    expect(browser_page.locator("#overrides")).to_contain_text(
        "radon: replicas held at 3 by oscar: the autoscaler is bypassed until released"
    )
    expect(radon).to_contain_text("held at 3")

    radon.get_by_label("Reason").fill("load test over")
    radon.get_by_role("button", name="Release hold").click()
    expect(radon.locator(".outcome")).to_contain_text("Released the hold on radon")
    expect(browser_page.locator("#overrides")).to_be_hidden()
    expect(radon.get_by_role("button", name="Release hold")).to_be_hidden()

    restart = radon.get_by_role("button", name="Restart pods")
    expect(restart).to_be_disabled()  # the last reason was used up
    radon.get_by_label("Reason").fill("stuck on a stale NFS handle")
    restart.click()
    expect(radon.locator(".outcome")).to_contain_text("Restarting the pods of radon")
    assert [(r[1], r[3]) for r in console.audit_rows()] == [
        ("hold", "load test of the survey mirror"),
        ("release_hold", "load test over"),
        ("restart", "stuck on a stale NFS handle"),
    ]
    assert [p.kind for p in console.kube.patches] == ["ScaledObject", "ScaledObject", "Deployment"]
    assert recorder.errors == []


def test_retry_counts_first_and_queues_only_when_confirmed(
    console: Console,
    page: tuple[Page, Recorder],
    queue: TaskQueue,
    add_galaxies: Callable[..., list[int]],
) -> None:
    queue.enqueue("fetch", add_galaxies(3))
    queue.claim_batch("fetch", 3, 60, "w")
    queue.fail(None, "fetch", "w", {1: "HTTP 503", 2: "HTTP 503", 3: "bad FITS"})
    browser_page, _ = page
    login(browser_page, console, OPERATOR_TOKEN)
    fetch = pipeline_card(browser_page, "fetch")
    expect(fetch.locator('td[data-state="failed"]')).to_have_text("3")

    fetch.get_by_label("Error contains").fill("503")
    fetch.get_by_label("Reason").fill("survey is back")
    fetch.get_by_role("button", name="Retry failed: count…").click()
    confirm = fetch.get_by_role("group", name="Confirm on fetch")
    expect(confirm).to_contain_text(
        "2 failed tasks of fetch whose error contains “503” would be queued again."
    )
    assert [(r[1], r[4]) for r in console.audit_rows()] == [("retry", "dry_run")]
    assert _failed(console.pool) == 3

    confirm.get_by_role("button", name="Retry 2 tasks").click()
    expect(fetch.locator(".outcome")).to_contain_text("Queued 2 failed tasks of fetch again")
    expect(confirm).to_be_hidden()
    expect(fetch.locator('td[data-state="failed"]')).to_have_text("1")
    assert _failed(console.pool) == 1
    assert [(r[1], r[4]) for r in console.audit_rows()] == [
        ("retry", "dry_run"),
        ("retry", "ok"),
    ]

    # What the action refuses is said as the server says it.
    fetch.get_by_label("New algo_version").fill("v2")
    fetch.get_by_label("Reason").fill("new masking")
    fetch.get_by_role("button", name="Requeue: count…").click()
    expect(fetch.get_by_role("alert")).to_contain_text(
        "requeue of fetch failed: pipeline 'fetch': requeue for a new algo_version applies to "
        "'radon'"
    )


# -- CSRF ----------------------------------------------------------------------------------------


def _failed(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        row = conn.execute(
            "SELECT count(*) FROM tasks WHERE pipeline = 'fetch' AND state = 'failed'"
        ).fetchone()
    assert row is not None
    return int(row[0])


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Serves one page that posts to the control API (``self.server.html``)."""

    def do_GET(self) -> None:
        body = self.server.html.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture
def attacker(console: Console) -> Iterator[int]:
    """Another origin (a port of its own) serving a page that attacks the control API."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    # A text/plain form can send a body that parses as JSON: {"reason":"csrf="}.
    server.html = (  # type: ignore[attr-defined]
        "<!doctype html><title>cute cats</title>"
        f'<form method="post" enctype="text/plain" '
        f'action="{console.url}{API_PREFIX}/pipelines/fetch/pause">'
        '<input type="hidden" name=\'{"reason":"csrf\' value=\'"}\'>'
        "<button>see cats</button></form>"
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_cross_site_post_with_the_session_cookie_is_refused(
    console: Console, page: tuple[Page, Recorder], attacker: int
) -> None:
    browser_page, _ = page
    login(browser_page, console, OPERATOR_TOKEN)
    pause_url = f"{console.url}{API_PREFIX}/pipelines/fetch/pause"

    # Same site, other origin (another port of 127.0.0.1): SameSite lets the cookie go along,
    # so the Origin check and the missing CSRF token must refuse it.
    browser_page.goto(f"http://127.0.0.1:{attacker}/")
    with browser_page.expect_response(pause_url) as answer:
        browser_page.get_by_role("button", name="see cats").click()
    assert answer.value.status == 403
    assert "cross-site request refused" in answer.value.text()
    assert "galpipe_session=" in (answer.value.request.header_value("cookie") or "")

    # Another site (localhost is not 127.0.0.1): the SameSite=Strict cookie stays behind.
    browser_page.goto(f"http://localhost:{attacker}/")
    script = """url => fetch(url, {method: "POST", mode: "no-cors", credentials: "include",
        headers: {"Content-Type": "text/plain"}, body: '{"reason": "csrf"}'}).then(r => r.type)"""
    with browser_page.expect_response(pause_url) as answer:
        assert browser_page.evaluate(script, pause_url) == "opaque"
    assert answer.value.status == 401
    assert "galpipe_session=" not in (answer.value.request.header_value("cookie") or "")

    assert not is_paused(console.pool, "fetch")
    assert console.audit_rows() == []
    # The session itself is intact: the console still works from its own origin.
    browser_page.goto(f"{console.url}/")
    expect(browser_page.locator("#whoami")).to_contain_text("oscar")
