"""Customer export (CSV / JSON, streamed) and the WeChat contact ↔ customer binding."""

import csv
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.customers import selectors
from apps.customers.models import BindingChange, Customer, WeChatBinding

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


def match_customer(text: str) -> tuple[Customer | None, str, str]:
    """The customer a WeChat remark / display name points at, how (code, phone, then name) and what
    matched. Only an unambiguous match counts (two candidates = no match). Whether the match is trusted
    depends on who wrote the text: see set_remark and _suggestion."""
    text = (text or "").strip()
    if not text:
        return None, WeChatBinding.Method.NONE, ""
    remark = parse_remark(text)
    if remark.code:
        customer = _unique(Customer.objects.filter(k_code__iexact=remark.code))
        if customer is not None:
            return customer, WeChatBinding.Method.CODE, remark.code
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
            return customer, WeChatBinding.Method.PHONE, phone
    for name in dict.fromkeys(filter(None, (remark.name, text))):
        customer = _unique(Customer.objects.filter(Q(name=name) | Q(contact_name=name) | Q(contacts__name=name)))
        if customer is not None:
            return customer, WeChatBinding.Method.NAME, name
    return None, WeChatBinding.Method.NONE, ""


# --- binding state changes: one entry point each, every one recorded as a BindingChange ------------
SYSTEM = "system"
# Suggestions never carry trust: a supervisor confirms them. Remark matches by name stay suggestions
# too (a namesake), while a code or phone the staff wrote in the remark binds.
REMARK_BINDS = (WeChatBinding.Method.CODE, WeChatBinding.Method.PHONE)


def _actor(user) -> tuple[object | None, str]:
    """(user, name) of whoever makes a change: a staff user, or "system:<why>"."""
    if user is None or isinstance(user, str):
        return None, f"{SYSTEM}:{user}" if user else SYSTEM
    return user, user.get_username()


def _record(binding: WeChatBinding, before: tuple[str, int | None], action: str, user) -> BindingChange:
    actor, actor_name = _actor(user)
    return BindingChange(
        binding=binding,
        agent_id=binding.agent_id,
        chat_name=binding.chat_name,
        sender=binding.sender,
        action=action,
        actor=actor,
        actor_name=actor_name,
        from_status=before[0],
        from_customer_id=before[1],
        to_status=binding.status,
        to_customer_id=binding.customer_id,
        method=binding.method,
        source=binding.source,
    )


def _stored_state(binding: WeChatBinding) -> tuple[str, int | None]:
    """(status, customer id) as stored, before the caller's change ("", None) for a new row."""
    if binding.pk is None:
        return "", None
    return WeChatBinding.objects.filter(pk=binding.pk).values_list("status", "customer_id").first() or ("", None)


def _save(binding: WeChatBinding, action: str, user, before: tuple[str, int | None]) -> None:
    """Save the binding and its change record together."""
    with transaction.atomic():
        binding.save()
        _record(binding, before, action, user).save()


def _suggestion(binding: WeChatBinding) -> None:
    """Fill the binding's suggestion from the names the customer controls: never trusted."""
    texts = [(binding.sender, WeChatBinding.Source.GROUP_MEMBER if binding.is_group else WeChatBinding.Source.SENDER)]
    if not binding.is_group:  # a group's name says nothing about which member is writing
        texts.append((binding.chat_name, WeChatBinding.Source.CHAT_NAME))
    for text, source in texts:
        customer, method, matched = match_customer(text)
        if customer is not None:
            binding.customer, binding.method, binding.source, binding.matched_text = customer, method, source, matched
            binding.status = WeChatBinding.Status.SUGGESTED
            return
    binding.customer, binding.method, binding.source, binding.matched_text = None, "", "", ""
    binding.status = WeChatBinding.Status.UNMATCHED


def note_contact(agent_id: str, chat_name: str, sender: str, *, is_group: bool = False) -> WeChatBinding:
    """A contact seen for the first time: record it with a suggestion (or unmatched) for supervisors.
    A concurrent first sight by another worker is not an error: its row is returned."""
    binding = WeChatBinding(agent_id=agent_id, chat_name=chat_name, sender=sender or "", is_group=is_group)
    _suggestion(binding)
    try:
        _save(binding, BindingChange.Action.SUGGEST, "first-seen", ("", None))
    except IntegrityError:  # another worker created it a moment ago
        binding = WeChatBinding.objects.get(agent_id=agent_id, chat_name=chat_name, sender=sender or "")
    return binding


def identify_contact(agent_id: str, chat_name: str, sender: str, *, is_group: bool = False) -> Customer | None:
    """The trusted customer of a WeChat contact for the engines (selectors.contact_identity decides), noting
    the contact the first time it is seen. One query once the contact is known."""
    identity = selectors.contact_identity(agent_id, chat_name, sender)
    if not identity.known:
        note_contact(agent_id, chat_name, sender, is_group=is_group)
    return identity.customer


def _change_many(bindings: QuerySet, wanted: dict, status: str, action: str, user) -> int:
    """Move the rows of `bindings` that match `wanted` to `status`, one change record each."""
    with transaction.atomic():
        rows = list(
            WeChatBinding.objects.select_for_update().filter(pk__in=bindings.values("pk"), **wanted).order_by("pk")
        )
        changes = []
        for binding in rows:
            before = (binding.status, binding.customer_id)
            binding.status = status
            changes.append(_record(binding, before, action, user))
        WeChatBinding.objects.filter(pk__in=[binding.pk for binding in rows]).update(
            status=status, updated_at=timezone.now()
        )
        BindingChange.objects.bulk_create(changes)
    return len(rows)


def confirm(bindings: QuerySet, user) -> int:
    """A supervisor confirms suggestions: they become trusted bindings. Returns how many."""
    wanted = {"status": WeChatBinding.Status.SUGGESTED, "customer__isnull": False}
    return _change_many(bindings, wanted, WeChatBinding.Status.BOUND, BindingChange.Action.CONFIRM, user)


def reject(bindings: QuerySet, user) -> int:
    """A supervisor rejects suggestions (kept, with the rejected customer, so a re-match skips them)."""
    wanted = {"status": WeChatBinding.Status.SUGGESTED}
    return _change_many(bindings, wanted, WeChatBinding.Status.REJECTED, BindingChange.Action.REJECT, user)


def bind(binding: WeChatBinding, customer: Customer | None, user) -> WeChatBinding:
    """Staff bind a contact to a customer by hand (trusted), or unbind it (None)."""
    before = _stored_state(binding)
    binding.customer = customer
    binding.method = WeChatBinding.Method.MANUAL if customer else WeChatBinding.Method.NONE
    binding.source = WeChatBinding.Source.STAFF if customer else WeChatBinding.Source.NONE
    binding.matched_text = ""
    binding.status = WeChatBinding.Status.BOUND if customer else WeChatBinding.Status.UNMATCHED
    _save(binding, BindingChange.Action.BIND if customer else BindingChange.Action.UNBIND, user, before)
    return binding


def set_remark(binding: WeChatBinding, remark: str, user) -> WeChatBinding:
    """Staff write the contact's remark: a code or phone in it that matches one customer binds (the
    customer cannot edit it); a name in it is a suggestion. A binding staff made by hand keeps its
    customer; one that rested on the old remark falls back to a suggestion when the new one matches nobody."""
    before = _stored_state(binding)
    binding.remark = remark
    customer, method, matched = match_customer(remark)
    if customer is not None and binding.source != WeChatBinding.Source.STAFF:
        binding.customer, binding.method, binding.matched_text = customer, method, matched
        binding.source = WeChatBinding.Source.REMARK
        binding.status = WeChatBinding.Status.BOUND if method in REMARK_BINDS else WeChatBinding.Status.SUGGESTED
    elif customer is None and binding.source == WeChatBinding.Source.REMARK:
        _suggestion(binding)
    else:
        binding.save(update_fields=["remark", "updated_at"])
        return binding
    _save(binding, BindingChange.Action.REMARK, user, before)
    return binding


def rematch(bindings: QuerySet, user) -> int:
    """Re-run the suggestion on bindings nobody decided (unmatched / suggested ones); returns how many
    now point somewhere. Trusted, rejected and staff-remark bindings are left as they are."""
    matched = 0
    undecided = bindings.filter(status__in=[WeChatBinding.Status.UNMATCHED, WeChatBinding.Status.SUGGESTED])
    for binding in undecided.exclude(source=WeChatBinding.Source.REMARK):
        before = (binding.status, binding.customer_id)
        _suggestion(binding)
        if (binding.status, binding.customer_id) != before:
            _save(binding, BindingChange.Action.SUGGEST, user, before)
        matched += binding.customer_id is not None
    return matched
