"""ERP sync (customers, contacts, contracts) and the contract look-ups the engines' tools use.

Conflict rule: the ERP wins for company and contact fields (they are rewritten whenever they differ
from the ERP); local fields (customer code, tags, intent score, WeChat bindings) are never in a
sync's write set. Writes are bulk upserts (`INSERT … ON CONFLICT (erp_id) DO UPDATE`) of only the
rows that differ, so a second identical sync writes nothing but the "last synced" stamp. One sync at
a time: a cache (Redis) lock.
"""

import logging
import secrets
import time
from datetime import date
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.cache import cache
from django.db import models, transaction
from django.utils import timezone

from apps.customers.models import SOURCE_CHOICES, VALUE_CHOICES, Contact, Customer
from apps.erp import metrics
from apps.erp.client import ErpClient, ErpError, ErpUnavailable
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
    try:
        rows = fetch_customers(client)
        stats["customers"] = upsert(Customer, rows, full=full, now=now, mark_missing="in_erp")
        customers_ok = True
    except ErpError as exc:
        errors.append(f"客户：{exc}")
        transient = isinstance(exc, ErpUnavailable)
    if customers_ok:
        customer_ids = dict(Customer.objects.values_list("erp_id", "pk"))
        for entity, model, fetch in (("contacts", Contact, fetch_contacts), ("contracts", Contract, fetch_contracts)):
            try:
                rows, orphans = fetch(client, customer_ids)
                stats[entity] = upsert(model, rows, full=full, now=now, mark_missing="delete")
                stats[entity]["orphans"] = orphans
            except ErpError as exc:
                errors.append(f"{model._meta.verbose_name}：{exc}")
    totals = {key: sum(entity.get(key, 0) for entity in stats.values()) for key in ("created", "updated", "unchanged")}
    run.created, run.updated, run.unchanged = totals["created"], totals["updated"], totals["unchanged"]
    run.errors = len(errors)
    run.error_log = "\n".join(errors)
    run.stats = {**stats, "seconds": round(time.monotonic() - started, 3), "erp_logins": client.logins}
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
    return text[: model._meta.get_field(field).max_length or None]


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def fetch_customers(client: ErpClient) -> dict[int, dict]:
    """The 13 columns of every customer, plus source and value rating.

    The list rows do not carry source (`ly`) and value (`jz`), but the list filters by them: one
    filtered pass per code partitions the customers, so both cost two extra passes over the list
    instead of one detail call per customer.
    """
    customers: dict[int, dict] = {}
    for row in client.customers():
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
    for field, choices, filter_name in (("source", SOURCE_CHOICES, "ly"), ("value_rating", VALUE_CHOICES, "jz")):
        for code, _label in choices:
            for row in client.customers(**{filter_name: code}):
                values = customers.get(_int(row.get("ord")))
                if values is not None:
                    values[field] = code
    return customers


def fetch_contacts(client: ErpClient, customer_ids: dict[int, int]) -> tuple[dict[int, dict], int]:
    contacts, orphans = {}, 0
    for row in client.contacts():
        erp_id, customer_id = _int(row.get("ord")), customer_ids.get(_int(row.get("company")))
        if erp_id is None or customer_id is None:
            orphans += 1
            continue
        contacts[erp_id] = {
            "erp_id": erp_id,
            "customer_id": customer_id,
            "name": _text(Contact, "name", row.get("name")),
            "sex": _text(Contact, "sex", row.get("sex")),
            "title": _text(Contact, "title", row.get("job")),
            "phone": _text(Contact, "phone", row.get("phone")),
            "mobile": _text(Contact, "mobile", row.get("mobile")),
            "email": _text(Contact, "email", row.get("email")),
        }
    return contacts, orphans


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


def fetch_contracts(client: ErpClient, customer_ids: dict[int, int]) -> tuple[dict[int, dict], int]:
    contracts, orphans = {}, 0
    for row in client.contracts():
        erp_id, customer_id = _int(row.get("ord")), customer_ids.get(_int(row.get("company")))
        if erp_id is None or customer_id is None:
            orphans += 1
            continue
        contracts[erp_id] = {
            "erp_id": erp_id,
            "customer_id": customer_id,
            "number": _text(Contract, "number", row.get("htid")),
            "title": _text(Contract, "title", row.get("title")),
            "amount": _decimal(row.get("money")),
            "signed_on": _date(row.get("date1")),
            "status": _text(Contract, "status", row.get("status")),
        }
    return contracts, orphans


# --- writing -------------------------------------------------------------------------------------
def _chunks(items: list, size: int = BATCH):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert(model: type[models.Model], incoming: dict[int, dict], *, full: bool, now, mark_missing: str) -> dict:
    """Bulk-upsert `incoming` ({erp_id: field values}) into `model`, writing only what differs.

    Rows the ERP no longer has are deleted (mark_missing="delete") or flagged False in that boolean
    field (customers keep their local data and bindings).
    """
    fields = SYNC_FIELDS[model]
    existing = {row[0]: row[1:] for row in model.objects.values_list("erp_id", *fields).iterator(chunk_size=5000)}
    to_write, unchanged_ids = [], []
    created = updated = 0
    for erp_id, values in incoming.items():
        current = existing.get(erp_id)
        if current is None:
            created += 1
        elif full or current != tuple(values[name] for name in fields):
            updated += 1
        else:
            unchanged_ids.append(erp_id)
            continue
        instance = model(**values, last_synced_at=now)
        if model is Customer:
            instance.k_code = f"K{erp_id}"  # default local code for a new customer; never updated by a sync
        to_write.append(instance)
    missing = [erp_id for erp_id in existing if erp_id not in incoming]
    update_fields = [*fields, "last_synced_at"]
    if any(field.name == "updated_at" for field in model._meta.concrete_fields):
        update_fields.append("updated_at")
    with transaction.atomic():
        for batch in _chunks(to_write):
            model.objects.bulk_create(
                batch, update_conflicts=True, unique_fields=["erp_id"], update_fields=update_fields
            )
        for batch in _chunks(unchanged_ids, 5000):
            model.objects.filter(erp_id__in=batch).update(last_synced_at=now)
        removed = 0
        for batch in _chunks(missing, 5000):
            if mark_missing == "delete":
                removed += model.objects.filter(erp_id__in=batch).delete()[0]
            else:
                removed += model.objects.filter(erp_id__in=batch, **{mark_missing: True}).update(
                    **{mark_missing: False}
                )
    return {"created": created, "updated": updated, "unchanged": len(unchanged_ids), "removed": removed}


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
