"""pytest fixtures shared by the erp and customers tests (imported by their conftest.py)."""

import httpx
import pytest

from apps.erp.client import ErpClient, ErpCredentials
from apps.erp.simulator import SIM_PASSWORD, SIM_USERNAME, SimulatorState, SimulatorThread


class SimulatorControl:
    """The simulator's control endpoints, over HTTP like everything else."""

    def __init__(self, thread: SimulatorThread):
        self.thread = thread
        self.url = thread.url
        self.state = thread.state

    def post(self, endpoint: str, **body) -> None:
        httpx.post(f"{self.url}/_sim/{endpoint}", json=body, timeout=5).raise_for_status()

    def fault(self, path: str, code: int, **options) -> None:
        self.post("fault", path=path, code=code, **options)

    def rename(self, erp_id: int, value: str, field: str = "name") -> None:
        self.post("rename", ord=erp_id, name=value, field=field)

    def stats(self) -> dict:
        return httpx.get(f"{self.url}/_sim/stats", timeout=5).json()


@pytest.fixture(scope="session")
def _simulator_thread():
    with SimulatorThread(SimulatorState()) as thread:
        yield thread


@pytest.fixture
def simulator(_simulator_thread, settings):
    """The 239-customer ERP simulator (one per test session, reset before each test); settings point at it."""
    _simulator_thread.state.reset()
    settings.ERP_BASE_URL = _simulator_thread.url
    settings.ERP_USERNAME, settings.ERP_PASSWORD = SIM_USERNAME, SIM_PASSWORD
    settings.ERP_RETRY_BACKOFF = 0.01
    return SimulatorControl(_simulator_thread)


@pytest.fixture
def erp_client(simulator):
    with ErpClient(ErpCredentials(simulator.url, SIM_USERNAME, SIM_PASSWORD), backoff=0.01, page_size=100) as client:
        yield client


@pytest.fixture
def synced(db, erp_client):
    """The database after one sync from the simulator."""
    from apps.erp import services

    run = services.sync_erp(client=erp_client)
    assert run.status == "success", run.error_log
    return run
