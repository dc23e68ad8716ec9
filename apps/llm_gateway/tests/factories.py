"""Gateway test data: providers and routes saved through the gateway services (so the gateway reloads, as
after an admin save)."""

import factory

from apps.llm_gateway import services
from apps.llm_gateway.models import Provider, Route, RouteEntry


class ProviderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Provider

    name = factory.Sequence(lambda n: f"provider{n}")
    kind = "custom"
    api_base = "http://127.0.0.1:9/v1"
    api_key = "sk-test-0001"
    default_model = "m1"

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return services.save_provider(model_class(*args, **kwargs))


class RouteFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Route

    name = factory.Sequence(lambda n: f"route{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        route = model_class(*args, **kwargs)
        services.save_route(route)
        return route


class RouteEntryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = RouteEntry

    route = factory.SubFactory(RouteFactory)
    provider = factory.SubFactory(ProviderFactory)
    position = factory.Sequence(int)
    model = ""

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        entry = model_class(*args, **kwargs)
        services.save_route_entries([entry], [])
        return entry
