"""Who may see what: every monitoring page, the dashboard socket, the statistics and the customer export answer
a staff user only with their named permission (403 without it), and anonymous visitors go to the login."""

import asyncio
import json

import pytest
import websockets

from apps.core.tests.helpers import staff_user
from apps.customers.api import EXPORT_PERMISSION
from apps.messages.api import VIEW_STATS
from apps.monitoring.models import VIEW_DASHBOARD, VIEW_TRACE
from apps.monitoring.tests.factories import TimedReplyFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def doors():
    """Each door, the permission that opens it, and a text only someone let in reads."""
    reply = TimedReplyFactory(message__content="我的手机号是13800000000")
    message = reply.message
    return [
        ("/dashboard/", VIEW_DASHBOARD, "P95 响应时间"),
        ("/dashboard/snapshot", VIEW_DASHBOARD, '"cards"'),
        (f"/dashboard/conversations/{message.conversation_id}/trace/", VIEW_TRACE, "13800000000"),
        (f"/dashboard/traces/{message.trace_id.hex}/", VIEW_TRACE, message.trace_id.hex),
        ("/api/v1/stats", VIEW_STATS, '"totals"'),
        ("/api/v1/customers/export?format=json", EXPORT_PERMISSION, "["),
    ]


def body(response) -> str:
    return b"".join(response.streaming_content if response.streaming else [response.content]).decode()


def test_each_door_needs_its_own_permission(client, doors):
    every = sorted({perm for _url, perm, _text in doors})
    for url, perm, text in doors:
        others = [name for name in every if name != perm]
        client.force_login(staff_user(f"without-{url}", *others))  # every other right, not this one
        refused = client.get(url)
        assert refused.status_code == 403, url
        assert text not in body(refused), url
        client.force_login(staff_user(f"with-{url}", perm))
        allowed = client.get(url)
        assert allowed.status_code == 200, url
        assert text in body(allowed), url
        client.logout()


def test_anonymous_visitors_are_sent_to_the_login_and_the_api_refuses_them(client, doors):
    for url, _perm, _text in doors:
        response = client.get(url)
        if url.startswith("/api/"):
            assert response.status_code in (401, 403), url
            assert "detail" in response.json(), url
        else:
            assert response.status_code == 302 and response["Location"].startswith("/admin/login/"), url


def test_a_superuser_passes_every_door(client, doors, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("root", password="Pa55-word-root"))
    assert [client.get(url).status_code for url, _perm, _text in doors] == [200] * len(doors)


def test_an_inactive_or_non_staff_holder_of_the_permission_is_refused(client, doors, django_user_model):
    user = staff_user("former", VIEW_DASHBOARD, VIEW_TRACE, VIEW_STATS, EXPORT_PERMISSION)
    client.force_login(user)
    user.is_staff = False
    user.save(update_fields=["is_staff"])
    for url, _perm, _text in doors:
        assert client.get(url).status_code in (302, 403), url


def test_admins_own_pages_need_their_models_view_permission(client):
    """Reports and previews among a ModelAdmin's URLs are not open to every staff account."""
    pages = [
        ("/admin/costs/usagerecord/report/", "costs.view_usagerecord", "LLM 成本日报"),
        ("/admin/knowledge/entry/try/", "knowledge.view_entry", "<form"),
        ("/admin/rules/rule/preview/", "rules.view_rule", "<form"),
    ]
    for url, perm, text in pages:
        client.force_login(staff_user(f"without-{url}", VIEW_DASHBOARD))
        assert client.get(url).status_code == 403, url
        client.force_login(staff_user(f"with-{url}", perm))
        allowed = client.get(url)
        assert allowed.status_code == 200 and text in allowed.content.decode(), url
        client.logout()
        assert client.get(url).status_code == 302, url  # to the admin login


@pytest.mark.e2e
def test_dashboard_socket_refuses_staff_without_the_permission(live_server_stack):
    from apps.monitoring.tests.test_dashboard import session_cookie

    base_url, _ = live_server_stack
    ws_url = base_url.replace("http", "ws") + "/ws/dashboard/"
    without = session_cookie(staff_user("traceonly", VIEW_TRACE, VIEW_STATS))
    holder = session_cookie(staff_user("watcher", VIEW_DASHBOARD))

    async def first_frame(cookie):
        headers = {"Cookie": cookie, "Origin": "http://127.0.0.1"}
        async with websockets.connect(ws_url, additional_headers=headers) as ws:
            return json.loads(await asyncio.wait_for(ws.recv(), 15))

    with pytest.raises(websockets.ConnectionClosed) as closed:
        asyncio.run(first_frame(without))
    assert closed.value.rcvd.code == 4403
    assert "cards" in asyncio.run(first_frame(holder))
