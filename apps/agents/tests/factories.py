"""Agents test data, registered through the agents services (so token checks see them, as after
`manage.py create_agent`). The secret in clear is on `agent.secret`."""

from datetime import timedelta

import factory
from django.utils import timezone

from apps.agents import services
from apps.agents.models import Agent


class AgentFactory(factory.django.DjangoModelFactory):
    """An enabled agent; `online=False` makes one silent for an hour, `queue_size` its last reported
    offline-queue length."""

    class Meta:
        model = Agent

    class Params:
        online = True
        queue_size = 0

    id = factory.Sequence(lambda n: f"agt_test{n}")
    name = factory.Sequence(lambda n: f"测试终端{n}")
    reported_presence = factory.LazyAttribute(lambda o: "online" if o.online else "offline")
    last_seen = factory.LazyAttribute(lambda o: timezone.now() - (timedelta(0) if o.online else timedelta(hours=1)))
    last_heartbeat = factory.LazyAttribute(lambda o: {"queue_size": o.queue_size})

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        name, agent_id = kwargs.pop("name"), kwargs.pop("id")
        agent, secret = services.create_agent(name, agent_id=agent_id, **kwargs)
        agent.secret = secret
        return agent
