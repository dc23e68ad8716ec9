"""django-prometheus's database metrics without swapping the DB engine class.

django-prometheus measures queries through its own ENGINE (`django_prometheus.db.backends.*`); other code
here checks the engine's name, so instead every connection gets an execute wrapper (Django's documented
hook) that feeds the same metric objects: django_db_new_connections_total, django_db_execute_total,
django_db_execute_many_total, django_db_errors_total, django_db_query_duration_seconds.
"""

import time

from django_prometheus.db import metrics as db


class QueryMetrics:
    def __init__(self):
        self._children: dict[tuple[str, str], tuple] = {}

    def children(self, alias: str, vendor: str) -> tuple:
        """The labelled metric children of one database, looked up once (labels() costs more than inc())."""
        key = (alias, vendor)
        if key not in self._children:
            self._children[key] = (
                db.execute_total.labels(alias, vendor),
                db.execute_many_total.labels(alias, vendor),
                db.query_duration_seconds.labels(alias, vendor),
            )
        return self._children[key]

    def __call__(self, execute, sql, params, many, context):
        connection = context["connection"]
        executed, executed_many, duration = self.children(connection.alias, connection.vendor)
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        except Exception as exc:
            db.errors_total.labels(connection.alias, connection.vendor, type(exc).__name__).inc()
            raise
        finally:
            duration.observe(time.perf_counter() - started)
            if many:
                executed_many.inc(len(params) if hasattr(params, "__len__") else 1)
            executed.inc()


query_metrics = QueryMetrics()


def instrument(sender, connection, **kwargs) -> None:
    """connection_created receiver: once per DatabaseWrapper (the pool hands the same wrapper out again)."""
    db.connections_total.labels(connection.alias, connection.vendor).inc()
    if query_metrics not in connection.execute_wrappers:
        connection.execute_wrappers.append(query_metrics)
