"""ERP sync (customers, contacts, contracts) and the contract look-ups the engines' tools use.

Conflict rule: the ERP wins for company and contact fields (they are rewritten whenever they differ
from the ERP); local fields (customer code, tags, intent score, WeChat bindings) are never in a
sync's write set. Writes are bulk upserts (`INSERT … ON CONFLICT (erp_id) DO UPDATE`) of only the
rows that differ, so a second identical sync writes nothing but the "last synced" stamp. One sync at
a time: a cache (Redis) lock.
"""

import functools
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.cache import cache
from django.db import connection, models, transaction
from django.utils import timezone

from apps.customers.models import SOURCE_CHOICES, VALUE_CHOICES, Contact, Customer
from apps.erp import metrics
from apps.erp.client import (
    CONTACT_LIST,
    CONTRACT_LIST,
    CUSTOMER_LIST,
    ErpClient,
    ErpError,
    ErpProtocolError,
    ErpUnavailable,
)
from apps.erp.models import Contract, SyncRun

logger = logging.getLogger(__name__)

LOCK_KEY = "erp:sync:lock"
BATCH = 1000
# The ERP-owned columns a sync writes, per model (everything else on the row is local).
SYNC_FIELDS = {
    Customer: [field for field, _column in Customer.ERP_COLUMNS[1:]] + ["source", "value_rating", "in_erp"],
    Contact: ["customer_id", "name", "sex", "title", "phone", "mobile", "email"],
    Contract: ["customer_id", "number", "title", "amount", "signed_on", "status"],
}


class SyncAlreadyRunning(Exception):
    """Another sync holds the lock."""


def sync_erp(*, full: bool = False, trigger: str = SyncRun.Trigger.COMMAND, client: ErpClient | None = None) -> SyncRun:
    """Pull customers (with source and value rating), contacts and contracts from the ERP.

    `full` rewrites every row even when it matches the ERP; the default writes only differences.
    Returns the SyncRun (status success / partial / failed, counts, errors). Raises
    SyncAlreadyRunning when another sync holds the lock.
    """
    token = secrets.token_hex(8)
    if not cache.add(LOCK_KEY, token, timeout=settings.ERP_SYNC_LOCK_SECONDS):
        raise SyncAlreadyRunning("ERP 同步正在进行中")
    try:
        own_client = client is None
        client = client or ErpClient.from_settings()
        try:
            return _sync(client, full=full, trigger=trigger)
        finally:
            if own_client:
                client.close()
    finally:
        if cache.get(LOCK_KEY) == token:
            cache.delete(LOCK_KEY)


def sync_running() -> bool:
    return cache.get(LOCK_KEY) is not None


def _sync(client: ErpClient, *, full: bool, trigger: str) -> SyncRun:
    run = SyncRun.objects.create(trigger=trigger, full=full)
    started = time.monotonic()
    now = timezone.now()
    errors: list[str] = []
    stats: dict[str, dict] = {}
    customers_ok = transient = False
    lists = fetch_lists(client)
    fetched = time.monotonic()
    try:
        rows = build_customers(lists)
        if not rows and Customer.objects.filter(in_erp=True).exists():
            # An empty list from an ERP that had customers is far likelier a fault than a wipe.
            raise ErpProtocolError("ERP 返回了 0 个客户；为防误删，本次未做任何修改")
        stats["customers"] = upsert(Customer, rows, full=full, now=now, mark_missing="in_erp")
        customers_ok = True
    except ErpError as exc:
        errors.append(f"客户：{exc}")
        transient = isinstance(exc, ErpUnavailable)
    if customers_ok:
        customer_ids = dict(Customer.objects.values_list("erp_id", "pk"))
        for entity, model, build in (("contacts", Contact, build_contact), ("contracts", Contract, build_contract)):
            try:
                rows, orphans = _owned_rows(_result(lists, entity), customer_ids, build)
                stats[entity] = upsert(model, rows, full=full, now=now, mark_missing="delete")
                stats[entity]["orphans"] = orphans
            except ErpError as exc:
                errors.append(f"{model._meta.verbose_name}：{exc}")
    totals = {key: sum(entity.get(key, 0) for entity in stats.values()) for key in ("created", "updated", "unchanged")}
    run.created, run.updated, run.unchanged = totals["created"], totals["updated"], totals["unchanged"]
    run.errors = len(errors)
    run.error_log = "\n".join(errors)
    run.stats = {
        **stats,
        "seconds": round(time.monotonic() - started, 3),
        "fetch_seconds": round(fetched - started, 3),
        "erp_logins": client.logins,
    }
    if transient:
        run.stats["transient"] = True
    run.status = (
        SyncRun.Status.FAILED if not customers_ok else SyncRun.Status.PARTIAL if errors else SyncRun.Status.SUCCESS
    )
    run.finished_at = timezone.now()
    run.save()
    metrics.ERP_SYNC_RUNS.labels(status=run.status).inc()
    metrics.ERP_SYNC_SECONDS.observe(time.monotonic() - started)
    for entity, counts in stats.items():
        for change in ("created", "updated"):
            metrics.ERP_SYNC_ROWS.labels(entity=entity, change=change).inc(counts.get(change, 0))
    log = logger.warning if errors else logger.info
    log("ERP sync #%s %s: %s %s", run.pk, run.status, totals, "; ".join(errors))
    return run


# --- fetching: ERP rows → model field values, keyed by erp_id -----------------------------------
def _text(model: type[models.Model], field: str, value) -> str:
    text = "" if value is None else str(value).strip()
    return text[: _max_length(model, field)]


@functools.cache
def _max_length(model: type[models.Model], field: str) -> int | None:
    return model._meta.get_field(field).max_length


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# Source (`ly`) and value (`jz`) are not columns of the customer list, but the list filters by them:
# one filtered pass per code partitions the customers, so both cost two extra passes over the list
# instead of one detail call per customer.
PARTITIONS = (("source", "ly", SOURCE_CHOICES), ("value_rating", "jz", VALUE_CHOICES))


def fetch_lists(client: ErpClient) -> dict[str, list[dict] | ErpError]:
    """Every list a sync reads, fetched concurrently (ERP_FETCH_THREADS): rows, or the ErpError per list.

    Keys: "customers", "contacts", "contracts", and "<field>:<code>" for the partition passes.
    """
    jobs = {
        "customers": (CUSTOMER_LIST, {}),
        "contacts": (CONTACT_LIST, {}),
        "contracts": (CONTRACT_LIST, {}),
        **{
            f"{field}:{code}": (CUSTOMER_LIST, {filter_name: code})
            for field, filter_name, choices in PARTITIONS
            for code, _label in choices
        },
    }
    try:
        client.session()  # log in once here, not once per thread
    except ErpError as exc:
        return dict.fromkeys(jobs, exc)
    with ThreadPoolExecutor(max_workers=settings.ERP_FETCH_THREADS, thread_name_prefix="erp-fetch") as pool:
        futures = {key: pool.submit(lambda job=job: list(client.iter_rows(*job))) for key, job in jobs.items()}
    results: dict[str, list[dict] | ErpError] = {}
    for key, future in futures.items():
        try:
            results[key] = future.result()
        except ErpError as exc:
            results[key] = exc
    return results


def _result(lists: dict, key: str) -> list[dict]:
    result = lists[key]
    if isinstance(result, ErpError):
        raise result
    return result


def build_customers(lists: dict) -> dict[int, dict]:
    """The 13 columns of every customer, plus source and value rating, keyed by ERP id."""
    customers: dict[int, dict] = {}
    for row in _result(lists, "customers"):
        erp_id = _int(row.get("ord"))
        if erp_id is None:
            continue
        values = {"erp_id": erp_id, "in_erp": True, "source": "", "value_rating": ""}
        for field, column in Customer.ERP_COLUMNS[1:]:
            if field == "erp_contact_id":
                values[field] = _int(row.get(column))
            else:
                values[field] = _text(Customer, field, row.get(column))
        customers[erp_id] = values
    for field, _filter_name, choices in PARTITIONS:
        for code, _label in choices:
            for row in _result(lists, f"{field}:{code}"):
                values = customers.get(_int(row.get("ord")))
                if values is not None:
                    values[field] = code
    return customers


def _owned_rows(rows: list[dict], customer_ids: dict[int, int], build) -> tuple[dict[int, dict], int]:
    """Rows of a customer's child list (contacts, contracts) keyed by ERP id; rows of unknown customers are orphans."""
    built, orphans = {}, 0
    for row in rows:
        erp_id, customer_id = _int(row.get("ord")), customer_ids.get(_int(row.get("company")))
        if erp_id is None or customer_id is None:
            orphans += 1
            continue
        built[erp_id] = {"erp_id": erp_id, "customer_id": customer_id, **build(row)}
    return built, orphans


def build_contact(row: dict) -> dict:
    return {
        "name": _text(Contact, "name", row.get("name")),
        "sex": _text(Contact, "sex", row.get("sex")),
        "title": _text(Contact, "title", row.get("job")),
        "phone": _text(Contact, "phone", row.get("phone")),
        "mobile": _text(Contact, "mobile", row.get("mobile")),
        "email": _text(Contact, "email", row.get("email")),
    }


def _decimal(value) -> Decimal:
    try:
        return Decimal(str(value)).quantize(Decimal("0.01"))
    except (InvalidOperation, ValueError):
        return Decimal("0.00")


def _date(value) -> date | None:
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def build_contract(row: dict) -> dict:
    return {
        "number": _text(Contract, "number", row.get("htid")),
        "title": _text(Contract, "title", row.get("title")),
        "amount": _decimal(row.get("money")),
        "signed_on": _date(row.get("date1")),
        "status": _text(Contract, "status", row.get("status")),
    }


# --- writing -------------------------------------------------------------------------------------
def _chunks(items: list, size: int = BATCH):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert(model: type[models.Model], incoming: dict[int, dict], *, full: bool, now, mark_missing: str) -> dict:
    """Bulk-upsert `incoming` ({erp_id: field values}) into `model`, writing only what differs.

    Rows the ERP no longer has are deleted (mark_missing="delete") or flagged False in that boolean
    field (customers keep their local data and bindings). Unchanged rows are not written at all
    (their `last_synced_at` is the last sync that changed them; the SyncRun log says when the ERP
    was last read).
    """
    fields = SYNC_FIELDS[model]
    existing = {row[0]: row[1:] for row in model.objects.values_list("erp_id", *fields).iterator(chunk_size=5000)}
    new_rows, changed_rows = [], []
    for erp_id, values in incoming.items():
        current = existing.get(erp_id)
        if current is None:
            new_rows.append(values)
        elif full or current != tuple(values[name] for name in fields):
            changed_rows.append(values)
    missing = [erp_id for erp_id in existing if erp_id not in incoming]
    with transaction.atomic():
        write_rows(model, new_rows, now, new=True)
        write_rows(model, changed_rows, now)
        removed = 0
        for batch in _chunks(missing, 5000):
            if mark_missing == "delete":
                removed += model.objects.filter(erp_id__in=batch).delete()[0]
            else:
                flagged = model.objects.filter(erp_id__in=batch, **{mark_missing: True})
                removed += flagged.update(**{mark_missing: False})
    created, updated = len(new_rows), len(changed_rows)
    return {"created": created, "updated": updated, "unchanged": len(incoming) - created - updated, "removed": removed}


def _insert_only_defaults(model: type[models.Model], now) -> dict:
    """DB-ready values for the local columns of a new row (a sync never updates these)."""
    defaults = {}
    for field in model._meta.concrete_fields:
        if field.primary_key or field.attname in SYNC_FIELDS[model] or field.attname in ("erp_id", "last_synced_at"):
            continue
        value = (
            now if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False) else field.get_default()
        )
        defaults[field.attname] = field.get_db_prep_save(value, connection)
    return defaults


def write_rows(model: type[models.Model], rows: list[dict], now, *, new: bool = False) -> None:
    """INSERT … ON CONFLICT (erp_id) DO UPDATE of the ERP-owned columns (and updated_at, last_synced_at).

    On PostgreSQL rows go through COPY (about 10x faster than the ORM's multi-row INSERTs): rows
    known to be `new` straight into the table (the sync lock keeps anyone else from inserting ERP
    ids meanwhile), changed rows into a temporary table and from there as one upsert. Elsewhere
    `bulk_create(update_conflicts=True)`. A new customer's local code defaults to "K" + its ERP id.
    """
    if not rows:
        return
    fields = SYNC_FIELDS[model]
    update_fields = [*fields, "last_synced_at"]
    if "updated_at" in {field.attname for field in model._meta.concrete_fields}:
        update_fields.append("updated_at")
    if connection.vendor != "postgresql":
        objects = [model(**values, last_synced_at=now) for values in rows]
        if model is Customer:
            for instance in objects:
                instance.k_code = f"K{instance.erp_id}"
        for batch in _chunks(objects):
            model.objects.bulk_create(
                batch, update_conflicts=True, unique_fields=["erp_id"], update_fields=update_fields
            )
        return
    defaults = _insert_only_defaults(model, now)
    columns = ["erp_id", *fields, "last_synced_at", *defaults]
    quote = connection.ops.quote_name
    table, stage = quote(model._meta.db_table), quote(f"erp_stage_{model._meta.db_table}")
    column_list = ", ".join(quote(model._meta.get_field(name).column) for name in columns)
    static = list(defaults.values())
    k_code = columns.index("k_code") if model is Customer else None
    # Identifiers only, from model metadata, quoted: nothing from the ERP goes into the SQL text.
    with connection.cursor() as cursor:
        if not new:
            cursor.execute(f"DROP TABLE IF EXISTS {stage}")
            cursor.execute(f"CREATE TEMP TABLE {stage} AS SELECT {column_list} FROM {table} WITH NO DATA")  # noqa: S608
        with cursor.cursor.copy(f"COPY {table if new else stage} ({column_list}) FROM STDIN") as copy:
            for values in rows:
                row = [values["erp_id"], *(values[name] for name in fields), now, *static]
                if k_code is not None:
                    row[k_code] = f"K{values['erp_id']}"
                copy.write_row(row)
        if not new:
            assignments = ", ".join(
                f"{quote(model._meta.get_field(name).column)} = EXCLUDED.{quote(model._meta.get_field(name).column)}"
                for name in update_fields
            )
            cursor.execute(
                f"INSERT INTO {table} ({column_list}) SELECT {column_list} FROM {stage} "  # noqa: S608
                f"ON CONFLICT ({quote('erp_id')}) DO UPDATE SET {assignments}"
            )
            cursor.execute(f"DROP TABLE {stage}")


# --- contracts for the engines' tools (always scoped to one customer) -----------------------------
def _contract_dict(contract: Contract) -> dict:
    return {
        "id": contract.erp_id,
        "number": contract.number,
        "title": contract.title,
        "amount": str(contract.amount),
        "signed_on": contract.signed_on.isoformat() if contract.signed_on else None,
        "status": contract.status,
    }


def contracts_for(customer_id) -> list[dict]:
    """The contracts of one customer (local Customer id), newest first, from the synced copy."""
    return [_contract_dict(contract) for contract in Contract.objects.filter(customer_id=customer_id)]


def contract_detail(customer_id, contract_id, client: ErpClient | None = None) -> dict | None:
    """One contract of that customer with its product lines (fetched live from the ERP).

    `contract_id` is the `id` contracts_for returned (the ERP contract id). None when it is not that
    customer's contract. If the ERP cannot be reached the synced fields come back with
    `lines: []` and `detail_error`.
    """
    contract_id = _int(contract_id)
    contract = (
        Contract.objects.select_related("customer").filter(customer_id=customer_id, erp_id=contract_id).first()
        if contract_id is not None
        else None
    )
    if contract is None:
        return None
    detail = {**_contract_dict(contract), "customer": contract.customer.name, "lines": []}
    own_client = client is None
    try:
        client = client or ErpClient.from_settings()
        live = client.contract_detail(contract.erp_id)
        if _int(live.get("company")) == contract.customer.erp_id:
            detail["lines"] = [
                {key: line.get(key) for key in ("product", "num", "price", "money")} for line in live.get("lines") or []
            ]
    except ErpError as exc:
        detail["detail_error"] = str(exc)
    finally:
        if own_client and client is not None:
            client.close()
    return detail
