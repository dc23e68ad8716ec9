from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class LlmGatewayConfig(AppConfig):
    name = "apps.llm_gateway"
    label = "llm_gateway"
    verbose_name = _("大模型网关")
