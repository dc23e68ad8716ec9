"""Benchmark: full ERP sync (customers with source/value, contacts, contracts) from the simulator.

    .venv/bin/python bench/erp_sync.py [--sizes 239,100000] [--page-size 500]

For each size: start `python -m apps.erp.simulator --customers N` as its own process, empty the
customer tables, then time `apps.erp.services.sync_erp` twice: the first sync (everything created)
and a second identical one (everything unchanged). Uses PostgreSQL database `wxcs_erp` and Redis
db 4 unless DATABASE_URL / REDIS_URL say otherwise. Targets: 239 customers < 1 s, 100,000 < 60 s.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/wxcs_erp")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/4")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "wxcs.settings")
os.environ["WXCS_TESTING"] = "0"


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def start_simulator(customers: int) -> tuple[subprocess.Popen, str]:
    import httpx

    from apps.core.testing import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.erp.simulator", "--port", str(port), "--customers", str(customers)], cwd=BASE_DIR
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/_sim/stats", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("simulator did not start")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="239,100000")
    parser.add_argument("--page-size", type=int, default=500)
    options = parser.parse_args()
    ensure_database(os.environ["DATABASE_URL"])

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from apps.customers.models import Contact, Customer
    from apps.erp import services
    from apps.erp.client import ErpClient, ErpCredentials
    from apps.erp.models import Contract
    from apps.erp.simulator import SIM_PASSWORD, SIM_USERNAME

    print(f"load before: {os.getloadavg()}")
    for size in (int(value) for value in options.sizes.split(",")):
        process, url = start_simulator(size)
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "TRUNCATE erp_contract, customers_contact, customers_bindingchange, customers_wechatbinding, "
                    "customers_customer"
                )
            credentials = ErpCredentials(url, SIM_USERNAME, SIM_PASSWORD)
            for label in ("first sync (all new)", "second sync (unchanged)"):
                with ErpClient(credentials, page_size=options.page_size) as client:
                    started, cpu_started = time.perf_counter(), time.process_time()
                    run = services.sync_erp(client=client)
                    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
                assert run.status == "success", run.error_log
                counts = {entity: run.stats[entity] for entity in ("customers", "contacts", "contracts")}
                print(
                    f"{size:>7} customers, {label:<24} {elapsed:6.2f}s (fetch {run.stats['fetch_seconds']:5.2f}s, "
                    f"sync process CPU {cpu:5.2f}s)  "
                    f"customers={counts['customers']} contacts={counts['contacts']['created']}+"
                    f"{counts['contacts']['unchanged']} contracts={counts['contracts']['created']}+"
                    f"{counts['contracts']['unchanged']}  load={os.getloadavg()[0]:.2f}"
                )
            assert Customer.objects.count() == size
            print(
                f"        rows: {Customer.objects.count()} customers, {Contact.objects.count()} contacts, "
                f"{Contract.objects.count()} contracts"
            )
        finally:
            process.terminate()
            process.wait(timeout=30)
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
