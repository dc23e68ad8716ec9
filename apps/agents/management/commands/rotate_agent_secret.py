from django.core.management.base import BaseCommand, CommandError

from apps.agents.models import Agent
from apps.agents.services import rotate_secret


class Command(BaseCommand):
    help = (
        "Give an agent a new secret: prints it once (stored hashed). The old secret and every token issued "
        "before stop working, and the agent's open WebSockets are closed (4409)."
    )

    def add_arguments(self, parser):
        parser.add_argument("agent_id")
        parser.add_argument("--json", action="store_true", help="print {agent_id, api_key} as JSON")

    def handle(self, *args, agent_id, json, **options):
        agent = Agent.objects.filter(pk=agent_id).first()
        if agent is None:
            raise CommandError(f"no agent {agent_id!r}")
        secret = rotate_secret(agent)
        if json:
            import json as _json

            self.stdout.write(_json.dumps({"agent_id": agent.id, "api_key": secret}))
            return
        self.stdout.write(
            f"agent_id: {agent.id}\napi_key:  {secret}\n"
            "(the key is shown only once; put it in the agent's config — its old key and tokens no longer work)"
        )
