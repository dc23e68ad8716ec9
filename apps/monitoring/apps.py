import atexit
import os

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MonitoringConfig(AppConfig):
    name = "apps.monitoring"
    label = "monitoring"
    verbose_name = _("监控")

    def ready(self):
        from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready
        from django.conf import settings

        if settings.PROMETHEUS_MULTIPROC_DIR:
            from prometheus_client import multiprocess

            # A dead process's live gauges must leave the sums; its counters stay (they must not go back).
            atexit.register(multiprocess.mark_process_dead, os.getpid(), settings.PROMETHEUS_MULTIPROC_DIR)
        worker_ready.connect(serve_worker_metrics, weak=False)
        after_setup_logger.connect(adopt_celery_logger, weak=False)
        after_setup_task_logger.connect(adopt_celery_logger, weak=False)
        if settings.METRICS_DB_QUERIES:
            from django.db.backends.signals import connection_created

            from apps.monitoring.dbmetrics import instrument

            connection_created.connect(instrument, dispatch_uid="monitoring.dbmetrics")


def adopt_celery_logger(logger, **kwargs) -> None:
    """Celery replaces the root (and task) logger's handlers with its own: give them the trace id, the JSON
    format when LOG_JSON is on, and the per-trace store, so a message's trace goes on inside the worker."""
    from django.conf import settings

    from apps.core.tracing import JsonFormatter, TraceIdFilter
    from apps.monitoring.tracing import TraceStoreHandler

    trace_filter = TraceIdFilter()
    for handler in logger.handlers:
        handler.addFilter(trace_filter)
        if settings.LOG_JSON:
            handler.setFormatter(JsonFormatter())
    if not any(isinstance(handler, TraceStoreHandler) for handler in logger.handlers):
        store = TraceStoreHandler()
        store.addFilter(trace_filter)
        logger.addHandler(store)


def serve_worker_metrics(**kwargs) -> None:
    """A worker in its own container (docker) serves its process's metrics for Prometheus to scrape."""
    from django.conf import settings

    if settings.METRICS_WORKER_PORT:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = None
        if settings.PROMETHEUS_MULTIPROC_DIR:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=settings.PROMETHEUS_MULTIPROC_DIR)
        start_http_server(
            settings.METRICS_WORKER_PORT,
            addr=settings.METRICS_WORKER_ADDR,
            **({"registry": registry} if registry else {}),
        )
