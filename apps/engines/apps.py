from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class EnginesConfig(AppConfig):
    name = "apps.engines"
    label = "engines"
    verbose_name = _("引擎")
