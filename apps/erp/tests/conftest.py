from apps.erp.testing import _simulator_thread, erp_client, simulator, synced  # noqa: F401
