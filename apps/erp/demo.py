"""The demo's customers: start the ERP simulator on a free port, sync from it over HTTP, stop it.

Skipped when a real ERP is configured (ERP_BASE_URL or an active ERP connection row): then the
hourly sync brings the customers in. Idempotent: a second seed syncs again and changes nothing.
"""

from django.conf import settings

from apps.erp import services
from apps.erp.client import ErpClient, ErpCredentials
from apps.erp.models import ErpConnection, SyncRun
from apps.erp.simulator import SIM_PASSWORD, SIM_USERNAME, SimulatorThread


def seed(stdout) -> None:
    if settings.ERP_BASE_URL or ErpConnection.objects.filter(active=True).exists():
        stdout.write("ERP configured: customers arrive with the periodic sync (manage.py sync_erp to pull now)")
        return
    with SimulatorThread() as simulator, ErpClient(ErpCredentials(simulator.url, SIM_USERNAME, SIM_PASSWORD)) as client:
        run = services.sync_erp(trigger=SyncRun.Trigger.DEMO, client=client)
    customers = run.stats.get("customers", {})
    stdout.write(
        f"ERP simulator sync #{run.pk} {run.status}: {customers.get('created', 0)} customers created, "
        f"{customers.get('updated', 0)} updated, {customers.get('unchanged', 0)} unchanged"
    )
