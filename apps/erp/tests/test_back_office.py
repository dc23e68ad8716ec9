"""What supervisors see of the ERP in admin: customers with their contacts, contracts and bindings, the
sync log, and the ERP connection (password encrypted, never shown)."""

import pytest

from apps.customers.models import Customer
from apps.erp.models import ErpConnection, SyncRun
from apps.erp.tests.factories import ContractFactory

pytestmark = pytest.mark.django_db


def test_customer_list_searches_filters_and_offers_the_sync(synced, admin_client, django_assert_max_num_queries):
    with django_assert_max_num_queries(15):
        response = admin_client.get("/admin/customers/customer/")
    assert response.status_code == 200
    content = response.content.decode()
    assert "239" in content and "立即从 ERP 同步" in content and "同步记录" in content
    customer = Customer.objects.get(erp_id=3208)
    response = admin_client.get("/admin/customers/customer/", {"q": customer.contact_name})
    assert customer.name in response.content.decode()
    assert admin_client.get("/admin/customers/customer/", {"q": "K3208"}).context["cl"].result_count == 1
    assert admin_client.get("/admin/customers/customer/", {"category__exact": "经销商"}).context["cl"].result_count == 2
    salesperson = customer.salesperson
    response = admin_client.get("/admin/customers/customer/", {"salesperson__exact": salesperson})
    assert response.context["cl"].result_count == Customer.objects.filter(salesperson=salesperson).count()
    assert admin_client.get("/admin/customers/customer/", {"q": "没有这个客户"}).context["cl"].result_count == 0


def test_customer_page_shows_contacts_contracts_and_bindings_read_only(synced, admin_client):
    customer = Customer.objects.get(erp_id=3208)
    contract = ContractFactory(customer=customer, title="直流快充桩维保合同")
    response = admin_client.get(f"/admin/customers/customer/{customer.pk}/change/")
    content = response.content.decode()
    assert response.status_code == 200 and "联系人" in content and "合同" in content and "微信绑定" in content
    assert contract.title in content and f"/admin/erp/contract/{contract.pk}/change/" in content
    for contact in customer.contacts.all():
        assert contact.name in content
    assert admin_client.get("/admin/customers/customer/add/").status_code == 403  # customers come from the ERP
    assert admin_client.get("/admin/erp/contract/").status_code == 200
    assert admin_client.get("/admin/customers/wechatbinding/").status_code == 200


def test_sync_log_pages(synced, admin_client):
    response = admin_client.get("/admin/erp/syncrun/")
    assert response.status_code == 200 and "成功" in response.content.decode()
    assert admin_client.get(f"/admin/erp/syncrun/{synced.pk}/change/").status_code == 200
    assert admin_client.get("/admin/erp/syncrun/add/").status_code == 403
    assert SyncRun.objects.count() == 1


def test_erp_connection_admin_keeps_the_password_encrypted_and_hidden(admin_client):
    form = {"name": "生产 ERP", "base_url": "http://erp.internal:8080", "username": "api", "active": "on"}
    assert admin_client.post("/admin/erp/erpconnection/add/", {**form, "password": "Top$ecret1"}).status_code == 302
    connection = ErpConnection.objects.get()
    assert connection.password == "Top$ecret1"
    page = admin_client.get(f"/admin/erp/erpconnection/{connection.pk}/change/").content.decode()
    assert "Top$ecret1" not in page
    admin_client.post(f"/admin/erp/erpconnection/{connection.pk}/change/", {**form, "username": "api2", "password": ""})
    connection.refresh_from_db()
    assert (connection.username, connection.password) == ("api2", "Top$ecret1")
    bad = admin_client.post("/admin/erp/erpconnection/add/", {**form, "base_url": "not a url", "password": "x"})
    assert bad.status_code == 200 and ErpConnection.objects.count() == 1
