from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class CostsConfig(AppConfig):
    name = "apps.costs"
    label = "costs"
    verbose_name = _("成本与预算")

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from apps.costs import services
        from apps.costs.models import Budget, ModelPrice

        for model in (Budget, ModelPrice):
            post_save.connect(services.invalidate, sender=model, dispatch_uid=f"costs-{model.__name__}-save")
            post_delete.connect(services.invalidate, sender=model, dispatch_uid=f"costs-{model.__name__}-delete")
