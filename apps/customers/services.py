"""Customer export (CSV / JSON, streamed) and the WeChat contact ↔ customer binding."""

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet

from apps.customers.models import Customer, WeChatBinding

# --- export ----------------------------------------------------------------------------------
EXPORT_FIELDS = [field for field, _column in Customer.ERP_COLUMNS]
EXPORT_KEYS = [column for _field, column in Customer.ERP_COLUMNS]
EXPORT_FORMATS = ("csv", "json")
# A cell starting with one of these is a formula to Excel / LibreOffice (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
ROWS_PER_CHUNK = 500


def export_headers() -> list[str]:
    return [str(Customer._meta.get_field(field).verbose_name) for field in EXPORT_FIELDS]


def neutralise(value) -> str:
    """The cell text, prefixed with `'` when a spreadsheet would run it as a formula."""
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text


class _Line:
    """csv.writer target that hands back the formatted line instead of writing it."""

    def write(self, value: str) -> str:
        return value


def _rows(queryset: QuerySet) -> Iterator[tuple]:
    return queryset.order_by("erp_id").values_list(*EXPORT_FIELDS).iterator(chunk_size=2000)


def _chunked(lines: Iterable[str]) -> Iterator[str]:
    buffer = []
    for line in lines:
        buffer.append(line)
        if len(buffer) >= ROWS_PER_CHUNK:
            yield "".join(buffer)
            buffer = []
    if buffer:
        yield "".join(buffer)


def export_csv(queryset: QuerySet) -> Iterator[str]:
    """UTF-8 CSV with a BOM (Excel then reads Chinese correctly), Chinese headers, all 13 fields."""
    writer = csv.writer(_Line())
    yield "\ufeff" + writer.writerow(export_headers())
    yield from _chunked(writer.writerow([neutralise(value) for value in row]) for row in _rows(queryset))


def export_json(queryset: QuerySet) -> Iterator[str]:
    """A JSON array of objects keyed by the ERP's column ids (ord, name, catename, …)."""
    yield "["
    lines = (
        ("," if index else "") + "\n" + json.dumps(dict(zip(EXPORT_KEYS, row, strict=True)), ensure_ascii=False)
        for index, row in enumerate(_rows(queryset))
    )
    yield from _chunked(lines)
    yield "\n]\n"


def export(queryset: QuerySet, fmt: str) -> Iterator[str]:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; use csv or json")
    return export_csv(queryset) if fmt == "csv" else export_json(queryset)


def export_content_type(fmt: str) -> str:
    return "text/csv; charset=utf-8" if fmt == "csv" else "application/json; charset=utf-8"


# --- WeChat binding -------------------------------------------------------------------------------
CODE_PATTERN = re.compile(r"[A-Za-z]\d{2,}")
PHONE_PATTERN = re.compile(r"(?<!\d)(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})(?!\d)")
REMARK_SEPARATORS = re.compile(r"\s*[-－—_|]\s*")


@dataclass(frozen=True)
class Remark:
    """A WeChat remark in the house pattern code-region-name-tier-channel, e.g. K3208-渝A-张三-VIP-微信."""

    code: str = ""
    region: str = ""
    name: str = ""
    tier: str = ""
    channel: str = ""


def parse_remark(text: str) -> Remark:
    parts = [part for part in REMARK_SEPARATORS.split(text.strip()) if part]
    if not parts or not CODE_PATTERN.fullmatch(parts[0]):
        return Remark()
    parts = [*parts, "", "", "", ""]
    return Remark(code=parts[0].upper(), region=parts[1], name=parts[2], tier=parts[3], channel=parts[4])


def _unique(queryset: QuerySet) -> Customer | None:
    found = list(queryset.distinct()[:2])
    return found[0] if len(found) == 1 else None


def match_customer(text: str) -> tuple[Customer | None, str]:
    """The customer a WeChat remark / display name points at, and how: code, phone, then name.

    Only an unambiguous match counts (two candidates = no match).
    """
    text = (text or "").strip()
    if not text:
        return None, WeChatBinding.Method.NONE
    remark = parse_remark(text)
    if remark.code:
        customer = _unique(Customer.objects.filter(k_code__iexact=remark.code))
        if customer is not None:
            return customer, WeChatBinding.Method.CODE
    for phone in PHONE_PATTERN.findall(text):
        digits = phone.replace("-", "")
        customer = _unique(
            Customer.objects.filter(
                Q(mobile=phone)
                | Q(phone=phone)
                | Q(mobile=digits)
                | Q(contacts__mobile=digits)
                | Q(contacts__phone=phone)
            )
        )
        if customer is not None:
            return customer, WeChatBinding.Method.PHONE
    for name in dict.fromkeys(filter(None, (remark.name, text))):
        customer = _unique(Customer.objects.filter(Q(name=name) | Q(contact_name=name) | Q(contacts__name=name)))
        if customer is not None:
            return customer, WeChatBinding.Method.NAME
    return None, WeChatBinding.Method.NONE


# A code or a phone number identifies the customer: bound at once. A name may be a namesake: a
# supervisor confirms the suggestion in admin first.
AUTO_BIND_METHODS = (WeChatBinding.Method.CODE, WeChatBinding.Method.PHONE)


def apply_match(binding: WeChatBinding) -> WeChatBinding:
    """(Re)compute the suggestion of an automatic binding from its remark / sender / chat name."""
    customer, method = None, WeChatBinding.Method.NONE
    for text in (binding.remark, binding.sender, binding.chat_name):
        customer, method = match_customer(text)
        if customer is not None:
            break
    binding.customer, binding.method = customer, method
    if customer is None:
        binding.status = WeChatBinding.Status.UNMATCHED
    elif method in AUTO_BIND_METHODS:
        binding.status = WeChatBinding.Status.BOUND
    else:
        binding.status = WeChatBinding.Status.SUGGESTED
    return binding


def rematch(bindings: Iterable[WeChatBinding]) -> int:
    """Re-run the automatic suggestion on bindings nobody decided by hand; returns how many now point somewhere."""
    matched = 0
    for binding in bindings:
        if binding.method == WeChatBinding.Method.MANUAL or binding.status == WeChatBinding.Status.REJECTED:
            continue
        apply_match(binding).save(update_fields=["customer", "method", "status", "updated_at"])
        matched += binding.customer_id is not None
    return matched


def bind_manually(binding: WeChatBinding, customer: Customer | None) -> WeChatBinding:
    binding.customer = customer
    binding.method = WeChatBinding.Method.MANUAL if customer else WeChatBinding.Method.NONE
    binding.status = WeChatBinding.Status.BOUND if customer else WeChatBinding.Status.UNMATCHED
    binding.save()
    return binding


def set_status(bindings: QuerySet, status: str) -> int:
    """Confirm (BOUND) or reject suggestions; only bindings that point at a customer can be confirmed."""
    if status == WeChatBinding.Status.BOUND:
        bindings = bindings.filter(customer__isnull=False)
    return bindings.update(status=status)


def bound_customer(agent_id: str, chat_name: str, sender: str, remark: str = "") -> Customer | None:
    """The customer this WeChat contact is bound to, or None.

    A binding for (agent, chat, sender) wins over one for the whole chat (sender ""). The first time
    a contact is seen, a binding row is created from its remark / display name (WeChat shows the
    remark as the name): a code or phone match binds at once, a name match waits for a supervisor,
    nothing → "unmatched" (listed in admin for manual binding). One query once the row exists.
    """
    sender = sender or ""
    bindings = list(
        WeChatBinding.objects.select_related("customer").filter(
            agent_id=agent_id, chat_name=chat_name, sender__in={sender, ""}
        )
    )
    if bindings:
        bindings.sort(key=lambda binding: binding.sender != sender)
        for binding in bindings:
            if binding.status == WeChatBinding.Status.BOUND and binding.customer is not None:
                return binding.customer
        if any(binding.sender == sender for binding in bindings):
            return None
    binding = apply_match(WeChatBinding(agent_id=agent_id, chat_name=chat_name, sender=sender, remark=remark))
    try:
        with transaction.atomic():
            binding.save()
    except IntegrityError:  # another worker created it a moment ago
        binding = WeChatBinding.objects.select_related("customer").get(
            agent_id=agent_id, chat_name=chat_name, sender=sender
        )
    return binding.customer if binding.status == WeChatBinding.Status.BOUND else None
