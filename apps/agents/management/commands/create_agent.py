from django.core.management.base import BaseCommand

from apps.agents.services import create_agent


class Command(BaseCommand):
    help = "Register a Windows agent; prints its id and secret once (the secret is stored hashed)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--id", dest="agent_id", default=None, help="agent id (default: generated agt_…)")
        parser.add_argument("--wechat-account", default="")
        parser.add_argument("--json", action="store_true", help="print {agent_id, api_key} as JSON")

    def handle(self, *args, name, agent_id, wechat_account, json, **options):
        agent, secret = create_agent(name, agent_id=agent_id, wechat_account=wechat_account)
        if json:
            import json as _json

            self.stdout.write(_json.dumps({"agent_id": agent.id, "api_key": secret}))
            return
        self.stdout.write(f"agent_id: {agent.id}\napi_key:  {secret}\n(the key is shown only once)")
