"""Where the gateway's providers and routes come from (admin rows, the environment, presets) and how a
change reaches the gateway: at once in the process that wrote it, through the Redis version elsewhere."""

from apps.core import aio, redis
from apps.llm_gateway import config
from apps.llm_gateway.models import Provider
from apps.llm_gateway.services import complete
from apps.llm_gateway.testing import reset_gateway
from apps.llm_gateway.tests.conftest import user_msg
from apps.llm_gateway.tests.factories import ProviderFactory, RouteEntryFactory, RouteFactory


def _no_settings_providers(settings) -> None:
    settings.LLM_PROVIDERS = {}
    settings.LLM_ROUTES = {}
    reset_gateway()


def test_admin_rows_define_providers_and_route_order(gw, settings):
    _no_settings_providers(settings)
    first = ProviderFactory(name="db1", api_base=gw.base_url, api_key="sk-db1", default_model="m1")
    second = ProviderFactory(name="db2", api_base=gw.base_url, api_key="sk-db2", default_model="m2")
    route = RouteFactory(name="default")
    RouteEntryFactory(route=route, provider=second, position=0, model="m2")
    RouteEntryFactory(route=route, provider=first, position=1)  # blank model: the provider's default
    gw.fail("500", model="m2")
    c = aio.run(complete(user_msg()))
    assert [(a.provider, a.model) for a in c.attempts][-1] == ("db1", "m1") and c.model == "m1"
    assert gw.requests(model="m1")[0]["authorization"] == "Bearer sk-db1"
    aio.run(aio.drain())


def test_a_disabled_provider_is_not_called(gw, settings):
    _no_settings_providers(settings)
    ProviderFactory(name="off", api_base=gw.base_url, default_model="m1", enabled=False)
    c = aio.run(complete(user_msg()))
    assert c.offline and c.offline_reason == "no_provider"
    assert gw.requests() == []


def test_a_hosted_provider_without_a_key_is_not_usable(gw, settings):
    _no_settings_providers(settings)
    ProviderFactory(name="deepseek", kind="deepseek", api_key="", default_model="")
    assert "deepseek" not in aio.run(config.get()).providers


def test_the_environment_fills_what_the_admin_row_leaves_blank(gw, settings):
    settings.LLM_ROUTES = {}
    settings.LLM_PROVIDERS = {"qwen": {"api_key": "sk-from-env", "api_base": gw.base_url}}
    ProviderFactory(name="qwen", kind="qwen", api_key="", api_base="", default_model="")
    provider = aio.run(config.get()).providers["qwen"]
    assert (provider.api_key, provider.api_base) == ("sk-from-env", gw.base_url)
    assert (provider.default_model, provider.cheap_model, provider.embedding_model) == (
        "qwen-plus",
        "qwen-turbo",
        "text-embedding-v3",
    )


def test_admin_change_applies_at_once_and_a_blank_key_keeps_the_stored_one(gw, settings, admin_client):
    _no_settings_providers(settings)
    provider = ProviderFactory(name="db1", api_base=gw.base_url, api_key="sk-stored", default_model="m1")
    assert aio.run(complete(user_msg())).model == "m1"
    form = {"name": "db1", "kind": "custom", "api_base": gw.base_url, "api_key": "", "default_model": "m2"}
    response = admin_client.post(f"/admin/llm_gateway/provider/{provider.pk}/change/", {**form, "enabled": "on"})
    assert response.status_code == 302
    assert Provider.objects.get(pk=provider.pk).api_key == "sk-stored"
    c = aio.run(complete(user_msg()))
    assert c.model == "m2" and gw.requests(model="m2")[0]["authorization"] == "Bearer sk-stored"
    response = admin_client.post(f"/admin/llm_gateway/provider/{provider.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert aio.run(complete(user_msg())).offline_reason == "no_provider"
    aio.run(aio.drain())


def test_another_process_write_is_seen_once_its_version_is_published(gw, settings):
    _no_settings_providers(settings)
    settings.LLM_CONFIG_TTL = 0  # check the version on every read
    assert aio.run(config.get()).providers == {}
    Provider.objects.create(name="elsewhere", api_base=gw.base_url, api_key="sk-x", default_model="m1")
    assert aio.run(config.get()).providers == {}  # written without a bump: not seen
    redis.client().set(config.CONFIG.version_key, "published-by-another-process")
    assert list(aio.run(config.get()).providers) == ["elsewhere"]


def test_a_route_saved_in_admin_serves_the_next_call(gw, settings, admin_client):
    _no_settings_providers(settings)
    provider = ProviderFactory(name="db1", api_base=gw.base_url, default_model="m1")
    assert aio.run(complete(user_msg())).model == "m1"  # the built-in default route: the provider's model
    entry = {"position": "0", "provider": str(provider.pk), "model": "m2", "temperature": "0.2"}
    form = {
        "name": "default",
        "description": "",
        "entries-TOTAL_FORMS": "1",
        "entries-INITIAL_FORMS": "0",
        "entries-MIN_NUM_FORMS": "0",
        "entries-MAX_NUM_FORMS": "1000",
        **{f"entries-0-{name}": value for name, value in entry.items()},
    }
    assert admin_client.post("/admin/llm_gateway/route/add/", form).status_code == 302
    c = aio.run(complete(user_msg()))
    assert c.model == "m2" and gw.requests(model="m2")[0]["body"]["temperature"] == 0.2
    aio.run(aio.drain())
