from io import StringIO

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from apps.customers.models import Contact, Customer
from apps.erp import services
from apps.erp.models import Contract, SyncRun
from conftest import requires_services

pytestmark = pytest.mark.django_db


def test_first_sync_imports_the_239_customers_with_contacts_and_contracts(synced, simulator):
    state = simulator.state
    assert Customer.objects.count() == 239
    assert Customer.objects.filter(category="终端客户").count() == 237
    assert Customer.objects.filter(category="经销商").count() == 2
    assert Contact.objects.count() == len(state.contacts)
    assert Contract.objects.count() == len(state.contracts)
    assert synced.stats["customers"] == {"created": 239, "updated": 0, "unchanged": 0, "removed": 0}
    assert synced.created == 239 + len(state.contacts) + len(state.contracts)
    assert synced.finished_at is not None and synced.errors == 0

    erp_row = state.by_ord[3208]
    customer = Customer.objects.get(erp_id=3208)
    assert customer.name == erp_row.name
    assert customer.contact_name == erp_row.contacts[0].name
    assert customer.erp_contact_id == erp_row.contacts[0].ord
    assert customer.latest_followup == erp_row.telintro
    assert (customer.source, customer.value_rating) == (erp_row.ly, erp_row.jz)  # from the filtered passes
    assert customer.k_code == "K3208"
    assert customer.contacts.count() == len(erp_row.contacts)
    assert not Customer.objects.filter(source="").exists()
    assert not Customer.objects.filter(value_rating="").exists()


def test_second_identical_sync_changes_nothing(synced, erp_client, django_assert_max_num_queries):
    before = {c.erp_id: (c.name, c.updated_at) for c in Customer.objects.all()}
    with django_assert_max_num_queries(20):
        run = services.sync_erp(client=erp_client)
    assert run.status == SyncRun.Status.SUCCESS
    assert (run.created, run.updated) == (0, 0)
    assert run.unchanged == Customer.objects.count() + Contact.objects.count() + Contract.objects.count()
    assert {c.erp_id: (c.name, c.updated_at) for c in Customer.objects.all()} == before
    assert Customer.objects.count() == 239


def test_renamed_customer_in_the_erp_is_updated(synced, erp_client, simulator):
    simulator.rename(3010, "重庆新名字机电有限公司")
    run = services.sync_erp(client=erp_client)
    assert run.stats["customers"]["updated"] == 1 and run.stats["customers"]["unchanged"] == 238
    assert Customer.objects.get(erp_id=3010).name == "重庆新名字机电有限公司"
    assert Customer.objects.count() == 239


def test_erp_wins_for_company_fields_local_wins_for_code_tags_and_score(synced, erp_client, simulator):
    Customer.objects.filter(erp_id=3020).update(
        name="本地改过的名字", salesperson="本地销售", k_code="K9999", tags=["VIP", "回访"], intent_score=88
    )
    simulator.rename(3020, "13800000000", field="mobile")
    run = services.sync_erp(client=erp_client)
    customer = Customer.objects.get(erp_id=3020)
    erp_row = simulator.state.customer_row(simulator.state.by_ord[3020])
    assert (customer.name, customer.salesperson, customer.mobile) == (
        erp_row["name"],
        erp_row["catename"],
        "13800000000",
    )
    assert (customer.k_code, customer.tags, customer.intent_score) == ("K9999", ["VIP", "回访"], 88)
    assert run.stats["customers"]["updated"] == 1


def test_full_sync_rewrites_every_row(synced, erp_client):
    run = services.sync_erp(client=erp_client, full=True)
    assert run.full and run.stats["customers"] == {"created": 0, "updated": 239, "unchanged": 0, "removed": 0}


def test_session_expiry_mid_sync_is_survived(db, erp_client, simulator):
    # The third customer-list call finds its session gone: the client logs in again and carries on.
    simulator.fault("custom/list.asp", 400, after=2)
    run = services.sync_erp(client=erp_client)
    assert run.status == SyncRun.Status.SUCCESS
    assert Customer.objects.count() == 239
    assert simulator.stats()["logins"] == 2 and run.stats["erp_logins"] == 2


def test_business_error_is_reported_in_the_sync_log(db, erp_client, simulator):
    simulator.fault("contract/billlist.asp", 300, message="合同模块维护中")
    run = services.sync_erp(client=erp_client)
    assert run.status == SyncRun.Status.PARTIAL
    assert run.errors == 1 and "合同模块维护中" in run.error_log and "300" in run.error_log
    assert Customer.objects.count() == 239 and Contract.objects.count() == 0


def test_failed_customer_list_fails_the_run_and_keeps_existing_data(synced, erp_client, simulator):
    simulator.fault("custom/list.asp", 300, message="客户模块已锁定", after=1)
    run = services.sync_erp(client=erp_client)
    assert run.status == SyncRun.Status.FAILED and "客户模块已锁定" in run.error_log
    assert Customer.objects.filter(in_erp=True).count() == 239
    assert not run.stats.get("transient")


def test_unreachable_erp_marks_the_run_transient(db, settings, erp_client, simulator):
    simulator.fault("custom/list.asp", 500, times=1000)
    run = services.sync_erp(client=erp_client)
    assert run.status == SyncRun.Status.FAILED and run.stats["transient"]


def test_customer_gone_from_the_erp_is_flagged_not_deleted(synced, erp_client, simulator):
    simulator.post("delete", ord=3100)
    run = services.sync_erp(client=erp_client)
    assert run.stats["customers"]["removed"] == 1
    assert run.stats["contacts"]["removed"] == len(simulator.state.by_ord[3100].contacts)
    assert Customer.objects.get(erp_id=3100).in_erp is False
    assert not Contact.objects.filter(customer__erp_id=3100).exists()
    assert Customer.objects.filter(in_erp=True).count() == 238


def test_one_sync_at_a_time(db, erp_client):
    cache.add(services.LOCK_KEY, "someone-else", timeout=60)
    with pytest.raises(services.SyncAlreadyRunning):
        services.sync_erp(client=erp_client)
    with pytest.raises(CommandError, match="正在进行"):
        call_command("sync_erp")
    assert not SyncRun.objects.exists()


def test_sync_erp_command_against_the_configured_erp(db, simulator):
    out = StringIO()
    call_command("sync_erp", stdout=out)
    assert "customers: created 239, updated 0, unchanged 0" in out.getvalue()
    out = StringIO()
    call_command("sync_erp", "--full", stdout=out)
    assert "customers: created 0, updated 239, unchanged 0" in out.getvalue()
    assert list(SyncRun.objects.values_list("trigger", "full").order_by("pk")) == [
        ("command", False),
        ("command", True),
    ]


def test_sync_erp_command_fails_loudly_on_a_business_error(db, simulator):
    simulator.fault("custom/list.asp", 300, message="账号已停用")
    err = StringIO()
    with pytest.raises(CommandError, match="failed"):
        call_command("sync_erp", stderr=err)
    assert "账号已停用" in err.getvalue()


def test_contracts_for_and_contract_detail_are_scoped_to_the_customer(synced, erp_client, simulator):
    owner = next(c for c in simulator.state.customers if len(c.contracts) >= 2)
    other = next(c for c in simulator.state.customers if c.contracts and c.ord != owner.ord)
    customer = Customer.objects.get(erp_id=owner.ord)
    contracts = services.contracts_for(customer.pk)
    assert {item["id"] for item in contracts} == {contract.ord for contract in owner.contracts}
    assert set(contracts[0]) == {"id", "number", "title", "amount", "signed_on", "status"}
    contract = owner.contracts[0]
    detail = services.contract_detail(customer.pk, contract.ord, client=erp_client)
    assert detail["number"] == contract.htid and detail["customer"] == customer.name
    assert [line["product"] for line in detail["lines"]] == [line["product"] for line in contract.lines]
    assert services.contract_detail(customer.pk, other.contracts[0].ord, client=erp_client) is None
    assert services.contract_detail(customer.pk, "not-a-number") is None


def test_contract_detail_without_the_erp_still_answers_from_the_synced_copy(synced, erp_client, simulator):
    owner = next(c for c in simulator.state.customers if c.contracts)
    customer = Customer.objects.get(erp_id=owner.ord)
    simulator.fault("contract/detail", 300, message="合同已归档")
    detail = services.contract_detail(customer.pk, owner.contracts[0].ord, client=erp_client)
    assert detail["lines"] == [] and "合同已归档" in detail["detail_error"]
    assert detail["title"] == owner.contracts[0].title


def test_orm_writer_used_off_postgresql_gives_the_same_result(db, erp_client, simulator, monkeypatch):
    from django.db import connection

    monkeypatch.setattr(connection, "vendor", "sqlite")  # bulk_create(update_conflicts=True) path
    run = services.sync_erp(client=erp_client)
    assert run.stats["customers"]["created"] == 239 and Customer.objects.get(erp_id=3208).k_code == "K3208"
    simulator.rename(3010, "改名后的公司")
    run = services.sync_erp(client=erp_client)
    assert run.stats["customers"] == {"created": 0, "updated": 1, "unchanged": 238, "removed": 0}
    assert Customer.objects.get(erp_id=3010).name == "改名后的公司"
    assert Contact.objects.count() == len(simulator.state.contacts)


@requires_services  # the COPY writer is PostgreSQL's; SQLite takes the ORM path
def test_copy_writer_fills_local_defaults_for_new_rows(synced):
    customer = Customer.objects.get(erp_id=3001)
    assert (customer.tags, customer.intent_score, customer.k_code) == ([], 0, "K3001")
    assert customer.created_at == customer.updated_at == customer.last_synced_at


def test_an_empty_customer_list_does_not_flag_everyone_gone(synced, erp_client, simulator):
    for customer in simulator.state.customers:
        simulator.state.deleted.add(customer.ord)
    simulator.state.changed()
    run = services.sync_erp(client=erp_client)
    assert run.status == SyncRun.Status.FAILED and "0 个客户" in run.error_log
    assert Customer.objects.filter(in_erp=True).count() == 239
