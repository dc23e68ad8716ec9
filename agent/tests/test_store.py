"""The encrypted record log and what is built on it: offline queue, sent ledger, seen set."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.store import HEADER_SIZE, OfflineQueue, SeenSet, SentLedger, derive_key

ROOT = Path(__file__).resolve().parents[2]
SECRET = "agent-secret-for-tests-0123456789"


def test_seed_check_capacity_10_add_15(tmp_path):
    queue = OfflineQueue(tmp_path / "q.log", SECRET, capacity=10)
    for i in range(1, 16):
        queue.put({"n": i})
    assert len(queue) == 10
    assert queue.peek(1)[0][1] == {"n": 6}  # the oldest left is the 6th added
    assert queue.dropped == 5
    queue.close()
    reopened = OfflineQueue(tmp_path / "q.log", SECRET, capacity=10)
    assert [item["n"] for _, item in reopened.peek()] == list(range(6, 16))
    assert reopened.dropped == 5  # drops are counted across restarts (reported in heartbeats)


def test_order_ack_and_restart(tmp_path):
    queue = OfflineQueue(tmp_path / "q.log", SECRET, capacity=100)
    seqs = [queue.put({"n": i, "text": f"消息 {i}"}) for i in range(20)]
    assert seqs == sorted(seqs)
    assert queue.ack(seqs[9]) == 10
    queue.close()
    queue = OfflineQueue(tmp_path / "q.log", SECRET, capacity=100)
    assert [item["n"] for _, item in queue.peek()] == list(range(10, 20))
    assert queue.put({"n": 20}) > seqs[-1]  # sequence numbers never go back


def test_encrypted_at_rest_and_key_not_stored(tmp_path):
    queue = OfflineQueue(tmp_path / "q.log", SECRET, capacity=10)
    queue.put({"text": "客户的手机号 13800138000"})
    queue.close()
    raw = (tmp_path / "q.log").read_bytes()
    assert b"13800138000" not in raw and "客户".encode() not in raw
    assert SECRET.encode() not in raw
    salt = raw[4:HEADER_SIZE]
    assert derive_key(SECRET, salt, "offline-queue") not in raw


def test_another_secret_cannot_read_it(tmp_path):
    queue = OfflineQueue(tmp_path / "q.log", SECRET, capacity=10)
    queue.put({"n": 1})
    queue.close()
    other = OfflineQueue(tmp_path / "q.log", "a-different-secret-9876543210", capacity=10)
    assert len(other) == 0
    assert list(tmp_path.glob("q.log.unreadable-*"))  # kept aside, not destroyed


def test_torn_last_record_is_cut_and_the_rest_kept(tmp_path):
    path = tmp_path / "q.log"
    queue = OfflineQueue(path, SECRET, capacity=100)
    for i in range(5):
        queue.put({"n": i})
    queue.close()
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # a crash in the middle of writing the 5th record
        fh.truncate(size - 7)
    queue = OfflineQueue(path, SECRET, capacity=100)
    assert [item["n"] for _, item in queue.peek()] == [0, 1, 2, 3]
    queue.put({"n": 99})
    queue.close()
    assert [item["n"] for _, item in OfflineQueue(path, SECRET, capacity=100).peek()] == [0, 1, 2, 3, 99]


def test_garbage_after_the_last_record_is_ignored(tmp_path):
    path = tmp_path / "q.log"
    queue = OfflineQueue(path, SECRET, capacity=100)
    queue.put({"n": 1})
    queue.close()
    with open(path, "ab") as fh:
        fh.write(os.urandom(40))
    assert [item["n"] for _, item in OfflineQueue(path, SECRET, capacity=100).peek()] == [1]


def test_compaction_keeps_the_file_bounded(tmp_path):
    path = tmp_path / "q.log"
    queue = OfflineQueue(path, SECRET, capacity=50)
    for i in range(5000):
        queue.put({"n": i, "pad": "x" * 100})
    assert len(queue) == 50 and queue.dropped == 4950
    assert path.stat().st_size < 10 * 50 * 400  # put() alone: bounded by the hard limit
    assert queue.maintain() is True  # the runtime calls this when idle
    assert path.stat().st_size < 60 * 400
    assert queue.maintain() is False
    queue.close()
    reopened = OfflineQueue(path, SECRET, capacity=50)
    assert [item["n"] for _, item in reopened.peek()] == list(range(4950, 5000))


WRITER = """
import sys
from agent.store import OfflineQueue
queue = OfflineQueue(sys.argv[1], sys.argv[2], capacity=int(sys.argv[3]))
i = 0
while True:
    queue.put({"n": i, "pad": "载荷" * 20})
    print(i, flush=True)  # printed only after put() returned: durable from here on
    i += 1
"""


@pytest.mark.parametrize("capacity", [100000, 64])
def test_kill_9_at_any_moment_loses_nothing_enqueued(tmp_path, capacity):
    """A writer enqueues as fast as it can and prints each number once put() has returned; it is
    killed with SIGKILL at a random moment. Reopened, the queue holds every printed number (the
    newest `capacity` of them when it overflowed), in order, without gaps."""
    rng = random.Random(capacity)
    for round_ in range(6):
        path = tmp_path / f"q{round_}.log"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), SECRET, str(capacity)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        proc.stdout.readline()  # the first put() is done
        time.sleep(rng.uniform(0.02, 0.4))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        confirmed = 1 + len(out.split())  # numbers 0 .. confirmed-1 were confirmed durable
        queue = OfflineQueue(path, SECRET, capacity=capacity)
        numbers = [item["n"] for _, item in queue.peek()]
        queue.close()
        total = numbers[-1] + 1  # one more than confirmed if the kill came between put() and print
        assert total in (confirmed, confirmed + 1)
        assert numbers == list(range(max(0, total - capacity), total))


def test_sent_ledger_and_seen_set_persist_and_are_bounded(tmp_path):
    ledger = SentLedger(tmp_path / "sent.log", SECRET, capacity=100)
    ledger.set("1", SentLedger.SENDING)
    ledger.set("1", SentLedger.SENT)
    ledger.set("2", SentLedger.SENDING)
    ledger.set("3", SentLedger.ACKED_DELIVERED)
    ledger.close()
    ledger = SentLedger(tmp_path / "sent.log", SECRET, capacity=100)
    assert ledger.get("1") == "sent" and ledger.get("2") == "sending" and "3" in ledger
    assert dict(ledger.unacked()) == {"1": "sent", "2": "sending"}
    for i in range(1000):
        ledger.set(f"r{i}", SentLedger.ACKED_DELIVERED)
    assert len(ledger) == 100
    ledger.close()
    seen = SeenSet(tmp_path / "seen.log", SECRET, capacity=10)
    for i in range(25):
        seen.add(f"fp{i}")
    seen.close()
    seen = SeenSet(tmp_path / "seen.log", SECRET, capacity=10)
    assert "fp24" in seen and "fp15" in seen and "fp14" not in seen and len(seen) == 10


def test_queue_items_round_trip_unicode_json(tmp_path):
    queue = OfflineQueue(tmp_path / "q.log", SECRET, capacity=5)
    item = {"chat_name": "渝A车友群", "text": "@客服\u2005你好 😀", "n": 1.5, "ok": True, "none": None}
    queue.put(item)
    queue.close()
    assert OfflineQueue(tmp_path / "q.log", SECRET, capacity=5).peek() == [(1, json.loads(json.dumps(item)))]
