import time

import pytest
from django.db import connection

from apps.core.testing import free_port
from apps.erp import client as erp
from apps.erp.client import ErpClient, ErpCredentials
from apps.erp.simulator import SIM_PASSWORD, SIM_USERNAME, SimulatorState, SimulatorThread
from apps.erp.tests.factories import ErpConnectionFactory

pytestmark = pytest.mark.django_db


def test_pages_through_the_whole_customer_list(erp_client, simulator):
    rows = list(erp_client.customers())
    assert len(rows) == 239 and len({row["ord"] for row in rows}) == 239
    assert set(rows[0]) == {
        "ord",
        "name",
        "catename",
        "sortname",
        "sort1name",
        "personname",
        "personjob",
        "phone",
        "mobile",
        "telintro",
        "person",
        "url",
        "personurl",
    }
    assert simulator.stats()["calls"][erp.CUSTOMER_LIST] == 3  # 100 + 100 + 39


def test_one_customer_by_telord_and_its_detail(erp_client):
    row = erp_client.customer(3208)
    assert row["ord"] == 3208
    detail = erp_client.customer_detail(3208)
    assert detail["name"] == row["name"] and detail["ly"] in {"171", "172", "173", "174", "977"}


def test_session_is_reused_across_clients_through_the_cache(simulator):
    credentials = ErpCredentials(simulator.url, SIM_USERNAME, SIM_PASSWORD)
    for _ in range(3):
        with ErpClient(credentials) as client:
            client.customer(3001)
    assert simulator.stats()["logins"] == 1


def test_expired_session_is_renewed_once():
    with SimulatorThread(SimulatorState(customers=10, session_ttl=0.3)) as sim:
        with ErpClient(ErpCredentials(sim.url, SIM_USERNAME, SIM_PASSWORD)) as client:
            assert client.customer(3001)["ord"] == 3001
            time.sleep(0.4)
            assert client.customer(3002)["ord"] == 3002
            assert client.logins == 2


def test_session_invalid_twice_is_an_error(erp_client, simulator):
    simulator.fault("custom/list.asp", 400, times=2)
    with pytest.raises(erp.ErpSessionInvalid):
        erp_client.customer(3001)


def test_business_error_is_surfaced_with_the_erps_message(erp_client, simulator):
    simulator.fault("contract/billlist.asp", 300, message="合同模块维护中")
    with pytest.raises(erp.ErpBusinessError, match="合同模块维护中") as info:
        list(erp_client.contracts())
    assert info.value.code == 300


def test_http_500_is_retried_with_backoff(erp_client, simulator):
    simulator.fault("custom/list.asp", 500, times=2)
    assert erp_client.customer(3001)["ord"] == 3001
    assert simulator.stats()["calls"][erp.CUSTOMER_LIST] == 3


def test_persistent_500_gives_up_as_unavailable(erp_client, simulator):
    simulator.fault("custom/list.asp", 500, times=10)
    with pytest.raises(erp.ErpUnavailable):
        erp_client.customer(3001)
    assert simulator.stats()["calls"][erp.CUSTOMER_LIST] == 4  # first try + 3 retries


def test_slow_erp_times_out(simulator):
    simulator.fault("custom/list.asp", 0, latency_ms=600, times=5)
    with ErpClient(
        ErpCredentials(simulator.url, SIM_USERNAME, SIM_PASSWORD), timeout=0.2, retries=1, backoff=0.01
    ) as client:
        started = time.monotonic()
        with pytest.raises(erp.ErpUnavailable, match="unreachable after 2 attempts"):
            client.customer(3001)
    assert time.monotonic() - started < 2


def test_unreachable_erp_is_unavailable():
    with ErpClient(ErpCredentials(f"http://127.0.0.1:{free_port()}", "u", "p"), retries=2, backoff=0.01) as client:
        with pytest.raises(erp.ErpUnavailable):
            client.login()


def test_wrong_password_is_a_business_error(simulator):
    with ErpClient(ErpCredentials(simulator.url, SIM_USERNAME, "wrong")) as client:
        with pytest.raises(erp.ErpBusinessError, match="登录失败"):
            client.login()


def test_credentials_from_connection_row_then_settings_then_simulator(settings):
    settings.ERP_BASE_URL, settings.ERP_USERNAME, settings.ERP_PASSWORD = "http://erp.example:81/", "alice", "s3cret"
    assert erp.current_credentials() == ErpCredentials("http://erp.example:81", "alice", "s3cret")
    assert "s3cret" not in repr(erp.current_credentials())
    row = ErpConnectionFactory(username="bob", password="pa55")
    assert erp.current_credentials() == ErpCredentials("http://erp.internal", "bob", "pa55")
    with connection.cursor() as cursor:
        cursor.execute("SELECT password FROM erp_erpconnection WHERE id = %s", [row.pk])
        stored = cursor.fetchone()[0]
    assert stored.startswith("enc:v1:") and "pa55" not in stored
    row.active = False
    row.save()
    settings.ERP_BASE_URL = ""
    assert erp.current_credentials() == ErpCredentials(
        f"http://127.0.0.1:{settings.ERP_SIMULATOR_PORT}", SIM_USERNAME, SIM_PASSWORD
    )


def test_login_is_retried_on_http_500_and_the_password_never_logged(simulator, caplog):
    simulator.fault("ov1/login", 500, times=2)
    with (
        caplog.at_level("DEBUG"),
        ErpClient(ErpCredentials(simulator.url, SIM_USERNAME, SIM_PASSWORD), backoff=0.01) as client,
    ):
        assert client.customer(3001)["ord"] == 3001
    assert simulator.stats()["logins"] == 1
    assert SIM_PASSWORD not in caplog.text
    token = client.session()
    assert token not in caplog.text
