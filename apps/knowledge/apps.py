from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class KnowledgeConfig(AppConfig):
    name = "apps.knowledge"
    label = "knowledge"
    verbose_name = _("知识库")

    def ready(self):
        from celery.signals import worker_process_init, worker_ready

        worker_process_init.connect(warm_pool_process, weak=False, dispatch_uid="knowledge.warm_pool_process")
        worker_ready.connect(warm_worker, weak=False, dispatch_uid="knowledge.warm_worker")


def warm_pool_process(**kwargs) -> None:
    """A prefork pool's child: it answers the questions, so it loads the index."""
    from .services import warm_up_in_background

    warm_up_in_background()


def warm_worker(sender=None, **kwargs) -> None:
    """A threads / solo pool answers in the worker's own process (prefork children warm themselves)."""
    from .services import warm_up_in_background

    if type(getattr(sender, "pool", None)).__module__ != "celery.concurrency.prefork":
        warm_up_in_background()
