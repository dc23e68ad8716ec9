"""Admin logins are throttled by django-axes per username and per client address: 429 + Retry-After."""

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "x-Pa55-word-long"


@pytest.fixture
def axes_on(settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 3
    return settings


def admin_login(username: str, password: str, address: str = "10.1.0.1", **headers):
    client = Client(REMOTE_ADDR=address)
    response = client.post(
        "/admin/login/?next=/admin/", {"username": username, "password": password}, follow=False, **headers
    )
    return client, response


def test_a_lockout_answers_429_with_retry_after_even_for_the_right_password(axes_on):
    get_user_model().objects.create_superuser("boss", password=PASSWORD)
    statuses = [admin_login("boss", f"wrong-{i}", f"10.1.0.{i}")[1].status_code for i in range(3)]
    assert statuses == [200, 200, 429]  # the admin form again, then locked at the limit
    _, locked = admin_login("boss", PASSWORD, "10.1.0.9")  # per username: another address does not help
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) == 15 * 60
    assert "登录失败次数过多" in locked.content.decode()
    _, api = admin_login("boss", PASSWORD, "10.1.0.9", HTTP_ACCEPT="application/json")
    assert api.status_code == 429 and api.json()["code"] == "throttled" and api.json()["detail"]


def test_one_address_guessing_many_usernames_is_locked_out(axes_on):
    get_user_model().objects.create_superuser("boss", password=PASSWORD)
    assert [admin_login(f"guess{i}", "x", "10.2.0.1")[1].status_code for i in range(3)] == [200, 200, 429]
    assert admin_login("boss", PASSWORD, "10.2.0.1")[1].status_code == 429
    client, ok = admin_login("boss", PASSWORD, "10.2.0.2")  # another address, the right password
    assert ok.status_code == 302 and client.get("/admin/").status_code == 200


def test_a_successful_login_resets_the_count(axes_on):
    get_user_model().objects.create_superuser("boss", password=PASSWORD)
    for _ in range(3):
        assert admin_login("boss", "wrong", "10.3.0.1")[1].status_code == 200
        assert admin_login("boss", PASSWORD, "10.3.0.1")[1].status_code == 302
    assert admin_login("boss", "wrong", "10.3.0.1")[1].status_code == 200  # 1 strike of 3 so far
