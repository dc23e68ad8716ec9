from contextlib import contextmanager

from apps.core.testing import running, start_daphne, start_worker


@contextmanager
def worker_and_daphne(worker_env: dict, daphne_env: dict, log_dir):
    """A real Celery worker and Daphne, both stopped afterwards (also when the second fails to start)."""
    worker = start_worker(worker_env, log_dir)
    try:
        daphne, base_url = start_daphne(daphne_env, log_dir)
    except Exception:
        worker.stop()
        raise
    with running(daphne, worker):
        yield worker, daphne, base_url
