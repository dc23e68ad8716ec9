import asyncio
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import websockets
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.agents.tests.factories import AgentFactory
from apps.core import aio
from apps.core.tests import helpers
from apps.costs import services as costs
from apps.monitoring import metrics, services
from apps.monitoring.models import VIEW_DASHBOARD, AlertRule
from apps.monitoring.tests.factories import AlertEventFactory, AlertRuleFactory, TimedReplyFactory

pytestmark = pytest.mark.django_db
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


STAFF_PASSWORD = "Pa55-word-ops"


def staff_user(username="ops"):
    """A staff account allowed to watch the dashboard."""
    return helpers.staff_user(username, VIEW_DASHBOARD, password=STAFF_PASSWORD)


def test_snapshot_reads_real_numbers_in_few_queries():
    online = AgentFactory()
    AgentFactory(online=False)
    TimedReplyFactory(agent=online, response_ms=1000, cost="0.010")
    TimedReplyFactory(agent=online, response_ms=3000, cost="0.020", status="pending_review")
    metrics.cache_hit("memory", True)
    metrics.cache_hit("memory", True)
    metrics.cache_hit("knowledge", False)
    rule = AlertRuleFactory(name="P95 过高", metric=AlertRule.Metric.P95_LATENCY, threshold=2000)
    AlertEventFactory(rule=rule, value=3000)

    with CaptureQueriesContext(connection) as captured:
        snapshot = services.dashboard_snapshot()
    # Savepoints only exist because the test runs inside a transaction (the producer runs in autocommit).
    queries = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    # 10 of our own; the rest is the costs app's budget check and daily report (its DB fallback when the
    # day's Redis counters are cold, as here).
    assert len(queries) <= 18, "\n".join(queries)

    cards = snapshot["cards"]
    assert cards["avg_response_ms"] == pytest.approx(2000, abs=1)
    assert cards["p95_response_ms"] == pytest.approx(3000, abs=1)
    assert cards["cache_hit_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert cards["total_requests"] == 2
    assert (cards["active_agents"], cards["agents"]) == (1, 2)
    assert cards["pending_reviews"] == 1
    assert [point["ms"] for point in snapshot["charts"]["response_times"]] == [
        pytest.approx(1000, abs=1),
        pytest.approx(3000, abs=1),
    ]
    assert len(snapshot["charts"]["messages_per_minute"]) == 30
    assert sum(point["n"] for point in snapshot["charts"]["messages_per_minute"]) == 2
    assert [alert["rule"] for alert in snapshot["alerts"]] == ["P95 过高"]
    json.dumps(snapshot)  # what the producer sends


def test_cost_today_comes_from_the_costs_tracker():
    before = services.dashboard_snapshot()["cards"]["cost_today"]
    spent = aio.run(costs.track("deepseek", "deepseek-chat", 100_000, 50_000)).cost
    assert spent > 0
    assert services.dashboard_snapshot()["cards"]["cost_today"] == pytest.approx(before + spent, rel=1e-3)


def test_dashboard_is_for_staff_only(client):
    assert client.get("/dashboard/").status_code == 302
    get_user_model().objects.create_user(username="plain", password="Pa55-word-x")
    client.login(username="plain", password="Pa55-word-x")
    assert client.get("/dashboard/").status_code == 302
    assert client.get("/dashboard/snapshot").status_code == 302
    staff_user()
    client.login(username="ops", password=STAFF_PASSWORD)
    page = client.get("/dashboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "vendor/chart.js/chart.umd.min.js" in html and "cdn" not in html.lower()
    assert 'id="initial-snapshot"' in html and "P95 响应时间" in html
    assert client.get("/dashboard/snapshot").json()["cards"]["total_requests"] == 0


def in_thread(function):
    def run():
        try:
            return function()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def read_frames(url: str, cookie: str, count: int) -> list[dict]:
    async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": "http://127.0.0.1"}) as ws:
        return [json.loads(await asyncio.wait_for(ws.recv(), 15)) for _ in range(count)]


@pytest.mark.e2e
def test_websocket_one_producer_pushes_every_second_to_every_viewer(live_server_stack):
    base_url, _ = live_server_stack
    ws_url = base_url.replace("http", "ws") + "/ws/dashboard/"
    staff_cookie = session_cookie(staff_user())
    plain_cookie = session_cookie(get_user_model().objects.create_user(username="plain", password="x-Pa55-word"))

    async def scenario():
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await read_frames(ws_url, plain_cookie, 1)
        assert closed.value.rcvd.code == 4403
        started = time.monotonic()
        viewers = await asyncio.gather(*(read_frames(ws_url, staff_cookie, 4) for _ in range(3)))
        return viewers, time.monotonic() - started

    viewers, elapsed = asyncio.run(scenario())
    timestamps = [[frame["ts"] for frame in frames] for frames in viewers]
    # Everyone sees the same snapshots (one producer), about one per second.
    shared = set(timestamps[0][-2:])
    assert all(shared <= set(ts) for ts in timestamps), timestamps
    assert 1.5 < elapsed < 10, elapsed
    assert all(len(set(ts)) >= 3 for ts in timestamps)


@pytest.mark.e2e
@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium not installed (.ci/run installs it)")
def test_dashboard_in_headless_chromium_shows_live_numbers(live_env, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from apps.core import webserver
    from apps.core.testing import Process, running, start_daphne, wait_until_http_ok

    env = {**live_env, "SERVE_STATIC": "true"}
    daphne, base_url = start_daphne(env, tmp_path)
    servers = [daphne]

    def stop_server():
        servers[-1].stop()

    def start_server_again():  # same address, so the page's reconnect finds it
        argv = webserver.argv("127.0.0.1", base_url.rsplit(":", 1)[1])
        servers.append(Process("daphne-again", argv, env, tmp_path))
        wait_until_http_ok(f"{base_url}/healthz", servers[-1])

    try:
        chromium_session(base_url, tmp_path, expect, sync_playwright, stop_server, start_server_again)
    finally:
        with running(*servers):
            pass


CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_session(base_url, tmp_path, expect, sync_playwright, stop_server, start_server_again):
    user = staff_user()
    admin_pages = ("monitoring.add_alertrule", "monitoring.view_alertrule", "wxmessages.view_reply")
    user.user_permissions.add(*(helpers.permission(name) for name in admin_pages))
    the_agent = AgentFactory()
    with sync_playwright() as pw:
        # A fresh profile directory per run (playwright passes it as --user-data-dir).
        browser = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            errors, blocked = [], []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: blocked.append(msg.text) if "Content Security Policy" in msg.text else None)
            log_in_to_the_dashboard(page, base_url, expect)
            watch_live_numbers(page, expect, the_agent)

            # The server goes away and comes back: the page reconnects by itself and stays live.
            in_thread(stop_server)
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "closed", timeout=10000)
            in_thread(start_server_again)
            expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=20000)
            in_thread(lambda: TimedReplyFactory(agent=the_agent, response_ms=100, status="delivered"))
            expect(page.locator('[data-card="total_requests"]')).to_have_text("4", timeout=10000)
            admin_works_under_the_csp(page, base_url, the_agent)
            assert errors == [] and blocked == [], (errors, blocked)
        finally:
            browser.close()


def admin_works_under_the_csp(page, base_url, the_agent) -> None:
    """The Content-Security-Policy is on, and admin pages with their scripts, widgets and styles still work."""
    in_thread(lambda: TimedReplyFactory(agent=the_agent))  # admin's reply list colours its status cell inline
    for path in ("/dashboard/", "/admin/", "/admin/wxmessages/reply/", "/admin/monitoring/alertrule/add/"):
        response = page.goto(f"{base_url}{path}")
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"], path
        assert response.headers["x-frame-options"] == "DENY"
        # admin's style sheet applied (style-src), its scripts ran (script-src): the theme toggle is wired up.
        assert page.evaluate("getComputedStyle(document.querySelector('#header')).display") != "inline", path
    page.select_option("#id_metric", index=1)  # the change form's widgets respond
    theme = page.evaluate("document.documentElement.dataset.theme")  # set by admin's theme.js: it ran
    page.locator("button.theme-toggle").first.click()
    assert theme and page.evaluate("document.documentElement.dataset.theme") != theme
    page.goto(f"{base_url}/api/docs/")  # Swagger UI starts from a script file, not an inline one
    page.locator(".swagger-ui .opblock").first.wait_for(timeout=15000)


def log_in_to_the_dashboard(page, base_url, expect) -> None:
    page.goto(f"{base_url}/admin/login/?next=/dashboard/")
    page.fill("#id_username", "ops")
    page.fill("#id_password", STAFF_PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{base_url}/dashboard/")
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live", timeout=15000)
    expect(page.locator('[data-card="total_requests"]')).to_have_text("0")
    expect(page.locator('[data-card="active_agents"]')).to_have_text("1")
    assert page.evaluate("typeof Chart") == "function"  # the vendored Chart.js loaded
    expect(page.locator("#dashboard")).not_to_have_attribute("data-frames", "0", timeout=10000)


def watch_live_numbers(page, expect, the_agent) -> None:
    """Messages flow: three decided messages with replies held for review (written from a plain thread:
    the playwright sync API keeps an event loop running in this one)."""
    in_thread(
        lambda: [TimedReplyFactory(agent=the_agent, response_ms=ms, status="pending_review") for ms in (400, 800, 1200)]
    )
    expect(page.locator('[data-card="total_requests"]')).to_have_text("3", timeout=10000)
    expect(page.locator('[data-card="pending_reviews"]')).to_have_text("3")
    expect(page.locator('[data-card="avg_response_ms"]')).to_have_text("800")
    expect(page.locator('[data-card="p95_response_ms"]')).to_have_text("1200")
    points = page.evaluate("Chart.getChart('chart-response').data.datasets[0].data")
    assert points == pytest.approx([400, 800, 1200], abs=1)


@pytest.mark.e2e
def test_one_producer_across_web_processes_and_failover_when_it_dies(live_env, tmp_path):
    """Viewers on two Daphnes get the same snapshots (one producer); kill the producer's process and the
    other Daphne takes over within the lock TTL."""
    from apps.core.testing import running, start_daphne

    cookie = session_cookie(staff_user())
    first, first_url = start_daphne(live_env, tmp_path, name="daphne-a")
    try:
        second, second_url = start_daphne(live_env, tmp_path, name="daphne-b")
    except Exception:
        first.stop()
        raise
    with running(first, second):
        urls = [url.replace("http", "ws") + "/ws/dashboard/" for url in (first_url, first_url, second_url, second_url)]

        async def watch(seconds: float) -> list[list[str]]:
            async def one(url):
                seen = []
                async with websockets.connect(
                    url, additional_headers={"Cookie": cookie, "Origin": "http://127.0.0.1"}
                ) as ws:
                    deadline = time.monotonic() + seconds
                    while time.monotonic() < deadline:
                        try:
                            seen.append(json.loads(await asyncio.wait_for(ws.recv(), 1.5))["ts"])
                        except TimeoutError:
                            continue
                return seen

            return await asyncio.gather(*(one(url) for url in urls))

        seen = asyncio.run(watch(5))
        everyone = [set(ts) for ts in seen]
        common = set.intersection(*everyone)
        assert len(common) >= 3, seen  # the same snapshots reached viewers of both processes
        assert len(set.union(*everyone)) <= 7, seen  # ~1 per second, not one per process or viewer

        first.kill()
        survivors = urls[2:]

        async def after_kill():
            async def one(url):
                async with websockets.connect(
                    url, additional_headers={"Cookie": cookie, "Origin": "http://127.0.0.1"}
                ) as ws:
                    started = time.monotonic()
                    frames = [json.loads(await asyncio.wait_for(ws.recv(), 8))["ts"] for _ in range(4)]
                    return frames, time.monotonic() - started

            return await asyncio.gather(*(one(url) for url in survivors))

        for frames, elapsed in asyncio.run(after_kill()):
            assert len(set(frames)) >= 3 and elapsed < 12, (frames, elapsed)


@pytest.mark.e2e
def test_viewer_whose_permission_is_revoked_is_disconnected_at_the_next_snapshot(live_env, tmp_path):
    from apps.core.testing import running, start_daphne

    user = staff_user()
    cookie = session_cookie(user)
    daphne, base_url = start_daphne(live_env, tmp_path)
    with running(daphne):

        async def scenario():
            headers = {"Cookie": cookie, "Origin": "http://127.0.0.1"}
            async with websockets.connect(
                base_url.replace("http", "ws") + "/ws/dashboard/", additional_headers=headers
            ) as ws:
                await asyncio.wait_for(ws.recv(), 10)
                await asyncio.to_thread(
                    in_thread, lambda: user.user_permissions.remove(helpers.permission(VIEW_DASHBOARD))
                )
                revoked = time.monotonic()
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    for _ in range(10):
                        await asyncio.wait_for(ws.recv(), 5)
                return closed.value.rcvd.code, time.monotonic() - revoked

        code, after = asyncio.run(scenario())
        assert code == 4403 and after < 3, after  # at most one more snapshot (DASHBOARD_INTERVAL = 1 s)
