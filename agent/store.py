"""The agent's durable state: an encrypted, append-only record log, and three things built on it —
the offline queue, the sent-reply ledger and the seen-fingerprint set.

Record log file: ``WXQ1`` + 16-byte salt, then records ``[u32 length][u32 crc32][nonce 12][AES-256-GCM
ciphertext + tag]``. The key is HKDF-SHA256(agent secret, salt, purpose): only the salt is stored
beside the data, never the key or the secret.

Crash safety: a record is handed to the kernel with one ``os.write`` on an ``O_APPEND`` descriptor
before `append()` returns, so a kill -9 at any later moment loses nothing (the page cache survives
the process). A kill in the middle of a write leaves at most a torn last record, which the checksum
catches on the next open; the file is cut back to the last whole record. With ``fsync=True`` every
append is also ``fdatasync``-ed (survives power loss too; ~0.2 ms more per append on this machine).
Compaction writes the live records to a temporary file, fsyncs it, renames it over the log and
fsyncs the directory, so a crash leaves either the old or the new file, both complete.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger("agent.store")

MAGIC = b"WXQ1"
SALT_SIZE = 16
HEADER_SIZE = len(MAGIC) + SALT_SIZE
_PREFIX = struct.Struct("<II")  # length of nonce+ciphertext, crc32 of it
_SEQ = struct.Struct("<Q")
_SEQ2 = struct.Struct("<QQ")


class StoreError(RuntimeError):
    pass


def derive_key(secret: str | bytes, salt: bytes, purpose: str) -> bytes:
    """A 256-bit key for one file, from the agent secret (never stored) and the file's salt."""
    material = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not material:
        raise StoreError("an agent secret is needed to open the encrypted store")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=f"wxcs-agent/{purpose}/v1".encode()).derive(
        material
    )


class RecordLog:
    """Individually encrypted, checksummed, length-prefixed records appended to one file."""

    def __init__(self, path: str | os.PathLike, secret: str | bytes, purpose: str, *, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.purpose = purpose
        self._secret = secret
        self._fd: int | None = None
        self.records_in_file = 0
        salt = self._read_or_create_header()
        self._aead = AESGCM(derive_key(secret, salt, purpose))
        self._salt = salt

    # -- opening ---------------------------------------------------------------------------------
    def _read_or_create_header(self) -> bytes:
        if self.path.exists() and self.path.stat().st_size >= HEADER_SIZE:
            with open(self.path, "rb") as fh:
                header = fh.read(HEADER_SIZE)
            if header[:4] == MAGIC:
                return header[4:]
            self._quarantine("not a record log")
        salt = os.urandom(SALT_SIZE)
        self._write_file(self.path, MAGIC + salt, [])
        return salt

    def _quarantine(self, why: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
        os.replace(self.path, aside)
        log.error("%s: %s; moved aside to %s and starting empty", self.path.name, why, aside.name)

    def replay(self) -> Iterator[bytes]:
        """Every whole record's plaintext, in order. A torn tail is cut off; a file encrypted with
        another secret is moved aside (its content cannot be read without that secret)."""
        data = self.path.read_bytes()
        offset, good_end, count = HEADER_SIZE, HEADER_SIZE, 0
        plaintexts = []
        while offset + _PREFIX.size <= len(data):
            length, crc = _PREFIX.unpack_from(data, offset)
            body = data[offset + _PREFIX.size : offset + _PREFIX.size + length]
            if len(body) != length or zlib.crc32(body) != crc or length < 12 + 16:
                break
            try:
                plaintexts.append(self._aead.decrypt(body[:12], body[12:], MAGIC))
            except InvalidTag:
                self._close()
                self._quarantine("records do not decrypt with this agent's secret")
                salt = self._read_or_create_header()
                self._aead = AESGCM(derive_key(self._secret, salt, self.purpose))
                self.records_in_file = 0
                return iter(())
            offset += _PREFIX.size + length
            good_end, count = offset, count + 1
        if good_end != len(data):
            log.warning("%s: cut %d bytes of a torn last record", self.path.name, len(data) - good_end)
            with open(self.path, "r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        self.records_in_file = count
        return iter(plaintexts)

    # -- writing ---------------------------------------------------------------------------------
    def seal(self, plaintext: bytes) -> bytes:
        """The on-disk bytes of one record (kept by callers so compaction never re-encrypts)."""
        nonce = os.urandom(12)
        body = nonce + self._aead.encrypt(nonce, plaintext, MAGIC)
        return _PREFIX.pack(len(body), zlib.crc32(body)) + body

    def append(self, *records: bytes) -> None:
        """Append sealed records with a single write: all of them reach the kernel, or (torn by a
        crash mid-write) the last ones are cut on the next open."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_BINARY", 0))
        blob = records[0] if len(records) == 1 else b"".join(records)
        written = os.write(self._fd, blob)
        while written < len(blob):  # a regular file only writes short on a full disk
            more = os.write(self._fd, blob[written:])
            if more <= 0:
                raise StoreError(f"short write to {self.path}")
            written += more
        if self.fsync:
            (getattr(os, "fdatasync", None) or os.fsync)(self._fd)
        self.records_in_file += len(records)

    def rewrite(self, records: list[bytes]) -> None:
        """Replace the file by exactly `records` (sealed), atomically."""
        self._close()
        self._write_file(self.path, MAGIC + self._salt, records)
        self.records_in_file = len(records)

    @staticmethod
    def _write_file(path: Path, header: bytes, records: list[bytes]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(b"".join(records))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
            dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close()


class OfflineQueue:
    """Messages waiting for the server: bounded, oldest dropped first (and counted), in order.

    Every inbound message goes through here before it is sent, online or not, and leaves only when
    the server has accepted it (`ack`). So a crash never loses a message the driver handed over.

    Records: ``E`` seq item-json (enqueued), ``A`` seq (everything up to seq accepted by the server),
    ``X`` seq dropped-total (everything up to seq dropped for room).
    """

    def __init__(self, path: str | os.PathLike, secret: str | bytes, *, capacity: int = 1000, fsync: bool = False):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._log = RecordLog(path, secret, "offline-queue", fsync=fsync)
        self._items: deque[tuple[int, bytes, bytes]] = deque()  # (seq, item json, sealed record)
        self._next_seq = 1
        self.dropped = 0
        self._load()

    def _load(self) -> None:
        items: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()
        for plain in self._log.replay():
            kind = plain[:1]
            if kind == b"E":
                (seq,) = _SEQ.unpack_from(plain, 1)
                items[seq] = (plain[1 + _SEQ.size :], b"")
                self._next_seq = max(self._next_seq, seq + 1)
            elif kind in (b"A", b"X"):
                if kind == b"A":
                    (upto,) = _SEQ.unpack_from(plain, 1)
                else:
                    upto, self.dropped = _SEQ2.unpack_from(plain, 1)
                self._next_seq = max(self._next_seq, upto + 1)
                for seq in [s for s in items if s <= upto]:
                    del items[seq]
        self._items = deque((seq, item, self._record(b"E", seq, item)) for seq, (item, _) in items.items())
        overflow = len(self._items) - self.capacity
        if overflow > 0:  # the process died between an enqueue and its drop record
            self._drop(overflow)
        self._compact()

    @staticmethod
    def _plain(kind: bytes, seq: int, item: bytes) -> bytes:
        return kind + _SEQ.pack(seq) + item

    def _record(self, kind: bytes, seq: int, item: bytes) -> bytes:
        return self._log.seal(self._plain(kind, seq, item))

    def put(self, item: dict) -> int:
        """Enqueue; durable (kill -9 safe) when it returns. Returns the item's sequence number."""
        seq = self._next_seq
        self._next_seq += 1
        body = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        record = self._record(b"E", seq, body)
        self._items.append((seq, body, record))
        if len(self._items) > self.capacity:
            oldest, _, _ = self._items.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:  # the heartbeat reports the count anyway
                log.warning(
                    "offline queue full (%d): dropped the oldest message; %d dropped so far",
                    self.capacity,
                    self.dropped,
                )
            drop = self._log.seal(b"X" + _SEQ2.pack(oldest, self.dropped))
            self._log.append(record, drop)
        else:
            self._log.append(record)
        self._maybe_compact()
        return seq

    def _drop(self, count: int) -> None:
        for _ in range(count):
            seq, _, _ = self._items.popleft()
            self.dropped += 1
        self._log.append(self._log.seal(b"X" + _SEQ2.pack(seq, self.dropped)))

    def peek(self, limit: int | None = None) -> list[tuple[int, dict]]:
        """The oldest `limit` items, not removed."""
        out = []
        for seq, body, _ in self._items:
            if limit is not None and len(out) >= limit:
                break
            out.append((seq, json.loads(body)))
        return out

    def ack(self, upto_seq: int) -> int:
        """The server has everything up to `upto_seq`: remove it. Returns how many were removed."""
        removed = 0
        while self._items and self._items[0][0] <= upto_seq:
            self._items.popleft()
            removed += 1
        if removed:
            self._log.append(self._log.seal(b"A" + _SEQ.pack(upto_seq)))
            self._maybe_compact()
        return removed

    def __len__(self) -> int:
        return len(self._items)

    def _maybe_compact(self) -> None:
        # A hard limit only: compaction (rewrite the live records — already sealed, no re-encryption —
        # fsync, rename) normally runs from `maintain()`, which the runtime calls when idle, so its
        # few milliseconds stay out of the enqueue path.
        if self._log.records_in_file > 8 * self.capacity + 64:
            self._compact()

    def maintain(self) -> bool:
        """Compact when the file holds more than ~2× capacity dead records. Returns True if it did."""
        if self._log.records_in_file > 3 * max(len(self._items), self.capacity // 4) + 64:
            self._compact()
            return True
        return False

    def _compact(self) -> None:
        head = self._log.seal(b"X" + _SEQ2.pack(self._next_seq - 1 - len(self._items), self.dropped))
        self._log.rewrite([head] + [record for _, _, record in self._items])

    def close(self) -> None:
        self._log.close()


class KeyedStateLog:
    """A small persisted map key → value (both short strings), bounded, oldest keys forgotten first."""

    def __init__(
        self, path: str | os.PathLike, secret: str | bytes, purpose: str, *, capacity: int, fsync: bool = False
    ):
        self.capacity = capacity
        self._log = RecordLog(path, secret, purpose, fsync=fsync)
        self._state: OrderedDict[str, str] = OrderedDict()
        for plain in self._log.replay():
            key, _, value = plain.decode("utf-8").partition("\x1f")
            self._state[key] = value
            self._state.move_to_end(key)
        self._trim()
        self._compact()

    def get(self, key: str) -> str | None:
        return self._state.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._state

    def __len__(self) -> int:
        return len(self._state)

    def set(self, key: str, value: str = "") -> None:
        self._log.append(self._log.seal(f"{key}\x1f{value}".encode()))
        self._state[key] = value
        self._state.move_to_end(key)
        self._trim()
        if self._log.records_in_file > 2 * self.capacity + 256:
            self._compact()

    def _trim(self) -> None:
        while len(self._state) > self.capacity:
            self._state.popitem(last=False)

    def _compact(self) -> None:
        self._log.rewrite([self._log.seal(f"{k}\x1f{v}".encode()) for k, v in self._state.items()])

    def close(self) -> None:
        self._log.close()


class SentLedger(KeyedStateLog):
    """Reply ids and how far each got: ``sending`` (written before the UI send), ``sent`` (after),
    ``failed``, then ``acked`` once the server has the outcome. Never send a reply twice: a reply
    found ``sending`` after a crash is reported failed, not sent again (at-most-once; see README)."""

    SENDING, SENT, FAILED, ACKED_DELIVERED, ACKED_FAILED = "sending", "sent", "failed", "acked", "acked-failed"

    def __init__(self, path, secret, *, capacity: int = 5000, fsync: bool = False):
        super().__init__(path, secret, "sent-ledger", capacity=capacity, fsync=fsync)

    def unacked(self) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self._state.items() if v in (self.SENDING, self.SENT, self.FAILED)]


class SeenSet(KeyedStateLog):
    """Fingerprints of messages already queued: duplicates (history shown again, a listener
    re-attached) are dropped. Bounded (default 5000), persisted across restarts."""

    def __init__(self, path, secret, *, capacity: int = 5000, fsync: bool = False):
        super().__init__(path, secret, "seen", capacity=capacity, fsync=fsync)

    def add(self, fingerprint: str) -> None:
        self.set(fingerprint)


class DeadLetters:
    """Messages the server refused for good (a 4xx, or a per-message rejection in a batch), moved out of the
    offline queue so they cannot block it. Kept encrypted like the queue, one record per message: ``{"item",
    "reason", "at"}``; `len()` is what the heartbeat reports as ``dead_letters``. Append-only: an operator reads
    them with `entries()` (e.g. to fix and resend by hand) and deletes the file to start over."""

    def __init__(self, path: str | os.PathLike, secret: str | bytes, *, fsync: bool = False):
        self._log = RecordLog(path, secret, "dead-letters", fsync=fsync)
        self._count = sum(1 for _ in self._log.replay())

    def add(self, item: dict, reason: str) -> None:
        """Durable when it returns (like `OfflineQueue.put`)."""
        record = {"item": item, "reason": reason[:2000], "at": time.time()}
        self._log.append(self._log.seal(json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogatepass")))
        self._count += 1

    def entries(self) -> list[dict]:
        return [json.loads(plain.decode("utf-8", "surrogatepass")) for plain in self._log.replay()]

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._log.close()
