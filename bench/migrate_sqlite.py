"""Benchmark: migrate_sqlite_to_postgres throughput (rows/s) on this machine.

    .venv/bin/python bench/migrate_sqlite.py [--messages 50000]

Builds an embedded-mode SQLite database under a temp dir, fills it with the test filler
(apps/core/tests/fill_sqlite.py: messages with replies, customers, contacts, contracts, usage
records, rules, knowledge entries, plus platform tables), then moves it into a fresh PostgreSQL
database `wxcs_bench_migrate` on 127.0.0.1 and prints the command's own summary.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
PG = "postgres://postgres@127.0.0.1:5432"
TARGET_DB = "wxcs_bench_migrate"


def run(args, env, **kwargs):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True, text=True, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=50000)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_path = Path(tmp) / "wxcs.sqlite3"
        base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        base.update(WXCS_TESTING="0", WXCS_VAR_DIR=tmp, SQLITE_PATH=str(sqlite_path))
        run(["migrate", "-v0"], base)
        started = time.perf_counter()
        run(["shell", "-c", f"from apps.core.tests.fill_sqlite import fill; fill({options.messages})"], base)
        print(f"filled SQLite in {time.perf_counter() - started:.1f}s ({sqlite_path.stat().st_size / 1e6:.0f} MB)")
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {TARGET_DB}"], check=True)
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"CREATE DATABASE {TARGET_DB}"], check=True)
        target = dict(base, DATABASE_URL=f"{PG}/{TARGET_DB}")
        started = time.perf_counter()
        result = run(
            ["migrate_sqlite_to_postgres", "--source", str(sqlite_path), "--no-progress"], target, capture_output=True
        )
        wall = time.perf_counter() - started
        summary = result.stdout[result.stdout.index("Summary") :]
        print(summary)
        print(f"whole command (migrate target schema + copy + verify): {wall:.1f}s")
        subprocess.run(["psql", f"{PG}/postgres", "-qc", f"DROP DATABASE IF EXISTS {TARGET_DB}"], check=True)


if __name__ == "__main__":
    main()
