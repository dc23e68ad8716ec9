from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LlmGatewayConfig(AppConfig):
    name = "apps.llm_gateway"
    label = "llm_gateway"
    verbose_name = _("大模型网关")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.llm_gateway import config
        from apps.llm_gateway.models import Provider, Route, RouteEntry

        for model in (Provider, Route, RouteEntry):
            post_save.connect(config.invalidate, sender=model, dispatch_uid=f"llmgw-{model.__name__}-save")
            post_delete.connect(config.invalidate, sender=model, dispatch_uid=f"llmgw-{model.__name__}-delete")
