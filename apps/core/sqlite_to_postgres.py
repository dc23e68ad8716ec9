"""Copy every table of the project from the embedded SQLite database into PostgreSQL.

Generic over installed models (many-to-many tables and third-party apps included), so a new model
is picked up without code changes. Raw values are copied, not ORM objects: encrypted columns keep
their ciphertext, and no model code (save(), signals) runs.

Plan: schema by Django migrations on the target; tables in foreign-key dependency order; rows
streamed with COPY in one transaction (a failed run leaves the target as migrate left it, so it can
simply be re-run); identity sequences reset; then a verification pass compares row counts and a
SHA-256 over each table's canonicalised rows ordered by primary key.
"""

import datetime as dt
import decimal
import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.core.management.color import no_style
from django.db import connections, models, transaction

BATCH_ROWS = 5000

# Written on the target after a successful copy, so that a second run refuses without --truncate.
# Plain SQL, not a model: it must not be copied or migrated itself.
IMPORT_MARKER_TABLE = "wxcs_sqlite_import"
# Rebuilt by post_migrate on every migrate, with ids that depend on history: never "data of its
# own", always replaced by the source's rows (the source's foreign keys point at those ids).
POST_MIGRATE_TABLES = frozenset({"django_content_type", "auth_permission"})


class MigrationRefused(Exception):
    """Preconditions failed; nothing was written."""


@dataclass
class TablePlan:
    model: type[models.Model]
    table: str
    columns: list[str]
    fields: list[models.Field]
    pk_column: str
    source_rows: int = 0


@dataclass
class TableResult:
    table: str
    rows: int
    seconds: float
    verified: bool | None = None
    detail: str = ""


@dataclass
class MigrationReport:
    tables: list[TableResult] = field(default_factory=list)
    copy_seconds: float = 0.0
    verify_seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def failed(self) -> list[TableResult]:
        return [t for t in self.tables if t.verified is False]


def concrete_models() -> list[type[models.Model]]:
    return [
        m
        for m in apps.get_models(include_auto_created=True)
        if m._meta.managed and not m._meta.proxy and not m._meta.swapped
    ]


def dependency_order(model_list: list[type[models.Model]]) -> list[type[models.Model]]:
    """Parents before children (FK / one-to-one targets first); cycles fall back to name order,
    which is safe because Django's PostgreSQL foreign keys are DEFERRABLE INITIALLY DEFERRED and
    the copy runs in one transaction."""
    remaining = {m._meta.db_table: m for m in model_list}
    deps = {
        table: {
            f.related_model._meta.db_table
            for f in m._meta.local_concrete_fields
            if f.is_relation and f.related_model is not None and f.related_model._meta.db_table != table
        }
        & remaining.keys()
        for table, m in remaining.items()
    }
    ordered: list[type[models.Model]] = []
    while remaining:
        ready = sorted(t for t in remaining if not (deps[t] & remaining.keys()))
        if not ready:  # a cycle: take the alphabetically first table, deferred FKs make it safe
            ready = [sorted(remaining)[0]]
        for table in ready:
            ordered.append(remaining.pop(table))
    return ordered


# --- value conversion: raw SQLite value → what PostgreSQL receives ------------------------------


def _to_datetime(value):
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        # Django keeps aware datetimes in SQLite as naive UTC text.
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return value


def _to_json_text(value):
    # SQLite keeps JSON as text; PostgreSQL parses the same text into jsonb.
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


CONVERTERS: dict[str, Callable] = {
    "BooleanField": lambda v: bool(v),
    "NullBooleanField": lambda v: bool(v),
    "DateTimeField": _to_datetime,
    "DateField": lambda v: dt.date.fromisoformat(v) if isinstance(v, str) else v,
    "TimeField": lambda v: dt.time.fromisoformat(v) if isinstance(v, str) else v,
    "DecimalField": lambda v: decimal.Decimal(str(v)),
    "DurationField": lambda v: dt.timedelta(microseconds=v) if isinstance(v, int) else v,
    "UUIDField": lambda v: uuid.UUID(v) if isinstance(v, str) else v,
    "JSONField": _to_json_text,
}


def converter_for(model_field: models.Field) -> Callable | None:
    return CONVERTERS.get(model_field.get_internal_type())


# --- COPY text, formatted by SQLite itself ---------------------------------------------------------
# Each row leaves SQLite as one line of PostgreSQL's COPY text format, so Python only joins lines.

NULL = r"'\N'"


def _escaped(column: str) -> str:
    text = f"CAST({column} AS TEXT)"
    for raw, escaped in (("'\\'", r"'\\'"), ("char(9)", r"'\t'"), ("char(10)", r"'\n'"), ("char(13)", r"'\r'")):
        text = f"replace({text}, {raw}, {escaped})"
    return text


COPY_EXPRESSIONS: dict[str, Callable[[str], str]] = {
    "BooleanField": lambda c: f"CASE WHEN {c} THEN 't' ELSE 'f' END",
    # Django keeps aware datetimes in SQLite as naive UTC text.
    "DateTimeField": lambda c: f"CASE WHEN {c} GLOB '*[+Z]*' THEN {c} ELSE {c} || '+00' END",
    "DurationField": lambda c: f"CAST({c} AS TEXT) || ' microseconds'",
    "FloatField": lambda c: f"printf('%!.17g', {c})",  # round-trips every double
    "BinaryField": lambda c: rf"'\\x' || hex({c})",
    "IntegerField": lambda c: f"CAST({c} AS TEXT)",
    "BigIntegerField": lambda c: f"CAST({c} AS TEXT)",
    "SmallIntegerField": lambda c: f"CAST({c} AS TEXT)",
    "PositiveIntegerField": lambda c: f"CAST({c} AS TEXT)",
    "PositiveBigIntegerField": lambda c: f"CAST({c} AS TEXT)",
    "PositiveSmallIntegerField": lambda c: f"CAST({c} AS TEXT)",
    "AutoField": lambda c: f"CAST({c} AS TEXT)",
    "BigAutoField": lambda c: f"CAST({c} AS TEXT)",
    "SmallAutoField": lambda c: f"CAST({c} AS TEXT)",
}


def copy_line_sql(model_fields: list[models.Field]) -> str:
    """SQL that turns a row into one COPY text line (NULL as \\N, text escaped)."""
    parts = []
    for model_field in model_fields:
        column = f'"{model_field.column}"'
        expression = COPY_EXPRESSIONS.get(model_field.get_internal_type(), _escaped)(column)
        parts.append(f"CASE WHEN {column} IS NULL THEN {NULL} ELSE {expression} END")
    return " || char(9) || ".join(parts)


# --- canonical form for checksums (both sides must agree) -----------------------------------------


def canonical(value) -> str:
    if value is None:
        return "∅"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(value // dt.timedelta(microseconds=1))
    if isinstance(value, decimal.Decimal):
        return format(value.normalize(), "f") if value == value else "NaN"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def canonical_key(value):
    """A primary key as SQLite stores it (UUIDs as 32 hex digits)."""
    return value.hex if isinstance(value, uuid.UUID) else value


def row_digest(rows: Iterable[tuple], json_positions: set[int]) -> tuple[int, str]:
    """Row count and an order-independent digest (sum of per-row SHA-256 mod 2**256): the two
    databases may order text primary keys differently, and the sum still changes with any value."""
    total = 0
    count = 0
    for row in rows:
        count += 1
        parts = []
        for i, value in enumerate(row):
            if i in json_positions and value is not None:
                # both sides hand JSON over as text (Django's psycopg setup does not parse jsonb)
                value = json.loads(value) if isinstance(value, str) else value
                parts.append(json.dumps(value, sort_keys=True, ensure_ascii=False))
            else:
                parts.append(canonical(value))
        total = (total + int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")) % 2**256
    return count, f"{total:064x}"


# --- the migration -----------------------------------------------------------------------------


class SqliteToPostgres:
    def __init__(self, source: Path, target_alias: str = "default", batch_rows: int = BATCH_ROWS):
        self.source_path = Path(source)
        self.target_alias = target_alias
        self.batch_rows = batch_rows
        if not self.source_path.is_file():
            raise MigrationRefused(f"source database not found: {self.source_path}")
        self.source = sqlite3.connect(f"file:{self.source_path}?mode=ro", uri=True)
        self.target = connections[target_alias]
        if self.target.vendor != "postgresql":
            raise MigrationRefused(
                f"the target database ({target_alias}) is {self.target.vendor}; set DATABASE_URL to PostgreSQL"
            )

    def close(self) -> None:
        self.source.close()

    # source inspection

    def _source_tables(self) -> set[str]:
        return {r[0] for r in self.source.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _source_columns(self, table: str) -> set[str]:
        return {r[1] for r in self.source.execute(f'PRAGMA table_info("{table}")')}

    def check_source_schema(self) -> None:
        """The source must be at the same migration state as this code, or columns would not line up."""
        if "django_migrations" not in self._source_tables():
            raise MigrationRefused("the source has no django_migrations table: is it a wxcs database?")
        applied = set(self.source.execute("SELECT app, name FROM django_migrations"))
        from django.db.migrations.loader import MigrationLoader

        loader = MigrationLoader(None, ignore_no_migrations=True)
        missing = sorted(f"{app}.{name}" for app, name in loader.graph.leaf_nodes() if (app, name) not in applied)
        if missing:
            raise MigrationRefused(
                "the source database is behind this code's migrations "
                f"({', '.join(missing[:5])}{'…' if len(missing) > 5 else ''}); run "
                f"`SQLITE_PATH={self.source_path} python manage.py migrate` with DATABASE_URL unset first"
            )

    def plan(self) -> list[TablePlan]:
        source_tables = self._source_tables()
        plans = []
        for model in dependency_order(concrete_models()):
            table = model._meta.db_table
            if table not in source_tables or table == "django_migrations":
                continue
            model_fields = list(model._meta.local_concrete_fields)
            columns = [f.column for f in model_fields]
            absent = set(columns) - self._source_columns(table)
            if absent:
                raise MigrationRefused(f"source table {table} lacks columns {sorted(absent)}")
            (count,) = self.source.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
            plans.append(TablePlan(model, table, columns, model_fields, model._meta.pk.column, count))
        return plans

    # target

    def target_data_tables(self, plans: list[TablePlan]) -> list[tuple[str, int]]:
        """Tables on the target holding data that did not come from `migrate` or from this source.

        A freshly migrated target already has rows written by migrations (content types,
        permissions, seeded prices, periodic tasks); the source ran the same migrations, so those
        rows have primary keys the source has too. A row whose key the source lacks is data of its
        own; so is any earlier import (the marker table).
        """
        existing = set(self.target.introspection.table_names())
        occupied = []
        with self.target.cursor() as cursor:
            if IMPORT_MARKER_TABLE in existing:
                cursor.execute(f"SELECT COUNT(*) FROM {IMPORT_MARKER_TABLE}")
                if cursor.fetchone()[0]:
                    occupied.append((f"{IMPORT_MARKER_TABLE} (an earlier import)", 1))
            for plan in plans:
                if plan.table not in existing or plan.table in POST_MIGRATE_TABLES:
                    continue
                cursor.execute(f'SELECT "{plan.pk_column}" FROM "{plan.table}"')
                keys = [row[0] for row in cursor.fetchall()]
                foreign = self._keys_missing_in_source(plan, keys)
                if foreign:
                    occupied.append((plan.table, foreign))
        return occupied

    def _keys_missing_in_source(self, plan: TablePlan, keys: list) -> int:
        if len(keys) > plan.source_rows:
            return len(keys) - plan.source_rows
        missing = 0
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            query = f'SELECT COUNT(*) FROM "{plan.table}" WHERE "{plan.pk_column}" IN ({marks})'
            (found,) = self.source.execute(query, [canonical_key(k) for k in chunk]).fetchone()
            missing += len(chunk) - found
        return missing

    def migrate_target_schema(self, stdout) -> None:
        call_command("migrate", database=self.target_alias, interactive=False, verbosity=0, stdout=stdout)

    def copy(self, plans: list[TablePlan], progress_factory) -> MigrationReport:
        report = MigrationReport()
        started = time.perf_counter()
        with transaction.atomic(using=self.target_alias):
            with self.target.cursor() as cursor:
                tables = ", ".join(f'"{p.table}"' for p in plans)
                cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
                set_based_checks = self._skip_row_triggers(cursor)
                for plan in plans:
                    table_started = time.perf_counter()
                    with progress_factory(plan) as progress:
                        rows = self._copy_table(cursor, plan, progress)
                    report.tables.append(TableResult(plan.table, rows, time.perf_counter() - table_started))
                if set_based_checks:
                    self._check_foreign_keys(cursor, plans)
                self._reset_sequences(cursor, [p.model for p in plans])
                self._write_marker(cursor, report)
        report.copy_seconds = time.perf_counter() - started
        return report

    def _skip_row_triggers(self, cursor) -> bool:
        """Foreign keys are checked by one row trigger per row and key, queued until commit: the
        larger part of a bulk load's cost. A superuser can switch them off for this transaction
        (`session_replication_role = replica`) and check every key with one anti-join instead."""
        cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        if not cursor.fetchone()[0]:
            return False
        cursor.execute("SET LOCAL session_replication_role = replica")
        return True

    def _check_foreign_keys(self, cursor, plans: list[TablePlan]) -> None:
        for plan in plans:
            for model_field in plan.fields:
                if not (model_field.is_relation and model_field.related_model is not None):
                    continue
                parent = model_field.related_model._meta
                target_column = model_field.target_field.column
                cursor.execute(
                    f'SELECT COUNT(*) FROM "{plan.table}" c WHERE c."{model_field.column}" IS NOT NULL AND NOT EXISTS '
                    f'(SELECT 1 FROM "{parent.db_table}" p WHERE p."{target_column}" = c."{model_field.column}")'
                )
                (orphans,) = cursor.fetchone()
                if orphans:
                    raise MigrationRefused(
                        f"{plan.table}.{model_field.column}: {orphans} row(s) point at missing {parent.db_table} rows"
                    )

    def _source_rows(self, plan: TablePlan) -> Iterator[list]:
        quoted = ", ".join(f'"{c}"' for c in plan.columns)
        cursor = self.source.execute(f'SELECT {quoted} FROM "{plan.table}" ORDER BY "{plan.pk_column}"')
        converters = [(i, c) for i, c in ((i, converter_for(f)) for i, f in enumerate(plan.fields)) if c]
        while batch := cursor.fetchmany(self.batch_rows):
            rows = []
            for raw in batch:
                row = list(raw)
                for i, convert in converters:
                    if row[i] is not None:
                        row[i] = convert(row[i])
                rows.append(row)
            yield rows

    def _copy_table(self, cursor, plan: TablePlan, progress) -> int:
        quoted = ", ".join(f'"{c}"' for c in plan.columns)
        select = f'SELECT {copy_line_sql(plan.fields)} FROM "{plan.table}" ORDER BY "{plan.pk_column}"'
        source = self.source.execute(select)
        written = 0
        raw_cursor = cursor.cursor  # psycopg cursor: COPY support
        with raw_cursor.copy(f'COPY "{plan.table}" ({quoted}) FROM STDIN') as copy:
            while batch := source.fetchmany(self.batch_rows):
                copy.write("".join(f"{line}\n" for (line,) in batch).encode())
                written += len(batch)
                progress.update(len(batch))
        return written

    def _write_marker(self, cursor, report: MigrationReport) -> None:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {IMPORT_MARKER_TABLE} "
            "(imported_at timestamptz NOT NULL DEFAULT now(), source text NOT NULL, tables integer, rows bigint)"
        )
        cursor.execute(f"DELETE FROM {IMPORT_MARKER_TABLE}")
        cursor.execute(
            f"INSERT INTO {IMPORT_MARKER_TABLE} (source, tables, rows) VALUES (%s, %s, %s)",
            [str(self.source_path), len(report.tables), report.rows],
        )

    def _reset_sequences(self, cursor, model_list) -> None:
        for sql in self.target.ops.sequence_reset_sql(no_style(), model_list):
            cursor.execute(sql)

    # verification

    def verify(self, plans: list[TablePlan], report: MigrationReport) -> None:
        started = time.perf_counter()
        results = {t.table: t for t in report.tables}
        with self.target.cursor() as cursor:
            for plan in plans:
                json_positions = {i for i, f in enumerate(plan.fields) if f.get_internal_type() == "JSONField"}
                source_count, source_digest = row_digest(
                    (row for rows in self._source_rows(plan) for row in rows), json_positions
                )
                quoted = ", ".join(f'"{c}"' for c in plan.columns)
                cursor.execute(f'SELECT {quoted} FROM "{plan.table}"')
                target_count, target_digest = row_digest(_fetch_all(cursor), json_positions)
                result = results[plan.table]
                result.verified = source_count == target_count and source_digest == target_digest
                if source_count != target_count:
                    result.detail = f"rows: source {source_count}, target {target_count}"
                elif source_digest != target_digest:
                    result.detail = "checksum differs"
        report.verify_seconds = time.perf_counter() - started


def _fetch_all(cursor, size: int = BATCH_ROWS) -> Iterator[tuple]:
    while batch := cursor.fetchmany(size):
        yield from batch


def default_source() -> Path:
    return Path(settings.VAR_DIR) / "wxcs.sqlite3"
