from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MessagesConfig(AppConfig):
    name = "apps.messages"
    label = "wxmessages"
    verbose_name = _("消息")
