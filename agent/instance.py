"""One agent process per state directory, and the installation id the server tells installations apart by.

The lock is an OS lock on ``state_dir/agent.lock`` (``msvcrt.locking`` on Windows, ``fcntl.flock`` elsewhere): the
OS drops it when the process ends however it ends (kill -9, a crash, a power cut), so a stale lock file never
blocks a restart. A second process on the same state directory (a double-click on start_agent.bat) would share the
queue and the sent-replies ledger file with the first and both would send: it exits instead (``AlreadyRunning``).

The installation id (sent as ``X-Agent-Instance`` on the WebSocket handshake) is a random id kept in the state
directory, mixed with the host name and the directory's absolute path: a copied folder or a second PC is another
installation (the server refuses its socket while this one's is connected, close 4423), while this installation
reconnecting after a network blip or a restart takes its own half-dead socket over at once.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import sys
from pathlib import Path

LOCK_FILE = "agent.lock"
ID_FILE = "installation-id"


class AlreadyRunning(RuntimeError):
    def __init__(self, state_dir: Path, holder: str):
        self.state_dir, self.holder = state_dir, holder
        super().__init__(
            f"另一个客服终端进程正在使用状态目录 {state_dir}（{holder}），本进程退出。 / "
            f"Another agent process is already using the state directory {state_dir} ({holder}); exiting."
        )


class StateDirLock:
    """Held from ``acquire()`` until ``release()`` or the end of the process."""

    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._file = None

    def acquire(self) -> StateDirLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+b")  # noqa: SIM115 - kept open while the lock is held
        try:
            _lock(handle)
        except OSError:
            handle.seek(0)
            holder = handle.read(200).decode("utf-8", "replace").strip() or "pid unknown"
            handle.close()
            raise AlreadyRunning(self.state_dir, holder) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}".encode())
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            _unlock(self._file)
            self._file.close()
            self._file = None


if sys.platform == "win32":
    import msvcrt

    # msvcrt locks a byte range, and a locked range cannot be read by another process: lock a byte far past the
    # pid text, so the second process can still read who holds the directory.
    _LOCK_OFFSET = 1 << 20

    def _lock(handle) -> None:
        handle.seek(_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)

    def _unlock(handle) -> None:
        handle.seek(_LOCK_OFFSET)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)

    def _unlock(handle) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def installation_id(state_dir: str | Path) -> str:
    """This installation's id (32 hex characters): stable across restarts, different for a copy elsewhere."""
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    id_file = state / ID_FILE
    try:
        random_part = id_file.read_text(encoding="ascii").strip()
    except OSError:
        random_part = ""
    if len(random_part) != 32:
        random_part = secrets.token_hex(16)
        id_file.write_text(random_part, encoding="ascii")
    mixed = f"{random_part}|{socket.gethostname()}|{state}"
    return hashlib.sha256(mixed.encode("utf-8")).hexdigest()[:32]
