"""The demo's customers: start the ERP simulator on a free port, sync from it over HTTP, stop it; then
bind the demo agent's private chat 王五 to the first customer through a staff remark (a trusted source,
so the demo answers contract questions from that customer's contracts).

Skipped when a real ERP is configured (ERP_BASE_URL or an active ERP connection row): then the
hourly sync brings the customers in. Idempotent: a second seed syncs again and changes nothing.
"""

from django.conf import settings

from apps.agents.demo import DEMO_AGENT_ID
from apps.customers import selectors as customer_selectors
from apps.customers import services as customer_services
from apps.customers.models import WeChatBinding
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
    bind_demo_contact(stdout)


# The simulator's private chat with 王五 (agent/drivers/simulator.py) and the remark staff would write
# for them: code-region-name-tier-channel, the code being the first demo customer's (K<ERP id>).
DEMO_CHAT = "王五"
DEMO_REMARK = "K3001-渝A-王五-VIP-微信"


def bind_demo_contact(stdout) -> None:
    if customer_selectors.trusted_customer(DEMO_AGENT_ID, DEMO_CHAT, DEMO_CHAT) is not None:
        return
    binding = WeChatBinding.objects.filter(agent_id=DEMO_AGENT_ID, chat_name=DEMO_CHAT, sender=DEMO_CHAT).first()
    binding = binding or customer_services.note_contact(DEMO_AGENT_ID, DEMO_CHAT, DEMO_CHAT)
    customer_services.set_remark(binding, DEMO_REMARK, "seed_demo")
    stdout.write(f"demo WeChat contact {DEMO_CHAT} bound by its staff remark {DEMO_REMARK}: {binding.customer or '-'}")
