import subprocess
import sys
import time
from collections import Counter

import httpx

from apps.core.testing import free_port
from apps.erp import simdata
from apps.erp.client import ErpClient, ErpCredentials
from apps.erp.simulator import SIM_PASSWORD, SIM_USERNAME


def test_data_set_is_the_239_customers_with_the_real_distributions():
    customers = simdata.generate()
    assert len(customers) == 239
    assert Counter(customer.sortname for customer in customers) == {"终端客户": 237, "经销商": 2}
    with_phone = sum(1 for customer in customers if customer.phone or customer.mobile)
    assert 0.15 <= with_phone / 239 <= 0.25
    assert all(customer.contacts for customer in customers)
    assert sum(len(customer.contracts) for customer in customers) > 100
    assert {customer.ord for customer in customers} == set(range(3001, 3240))
    rows = [customer.row() for customer in customers]
    assert all(tuple(row) == simdata.CUSTOMER_COLUMNS for row in rows)
    assert len({row["name"] for row in rows}) > 230  # Chinese company names, hardly any repeats
    assert all("公司" in row["name"] for row in rows)


def test_data_set_is_deterministic_and_a_prefix_of_larger_sets():
    first = [customer.row() for customer in simdata.generate()]
    again = [customer.row() for customer in simdata.generate()]
    larger = [customer.row() for customer in simdata.generate(1000)[:239]]
    assert first == again == larger
    assert first != [customer.row() for customer in simdata.generate(seed=1)]


def test_simulator_module_does_not_import_django():
    code = "import sys, apps.erp.simulator; assert not [m for m in sys.modules if m.startswith('django')]"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_simulator_runs_as_its_own_process_and_speaks_the_protocol(tmp_path, settings):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.erp.simulator", "--port", str(port), "--customers", "50"],
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert b"ERP simulator: 50 customers" in process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/_sim/stats", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        with ErpClient(ErpCredentials(url, SIM_USERNAME, SIM_PASSWORD), page_size=20) as client:
            rows = list(client.customers())
        assert [row["ord"] for row in rows] == list(range(3001, 3051))
        login = httpx.post(
            f"{url}/webapi/v3/ov1/login",
            json={
                "datas": [
                    {"id": "user", "val": "txt:demo"},
                    {"id": "password", "val": "txt:wrong"},
                    {"id": "serialnum", "val": "abc"},
                ]
            },
            timeout=5,
        ).json()
        assert login["header"]["status"] == 300
        assert "密码" in login["header"]["message"]
    finally:
        process.terminate()
        process.wait(timeout=10)
