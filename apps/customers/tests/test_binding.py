from collections import Counter

import pytest

from apps.customers import services
from apps.customers.models import Contact, Customer, WeChatBinding
from apps.customers.tests.factories import WeChatBindingFactory

pytestmark = pytest.mark.django_db


def test_parse_remark_pattern():
    remark = services.parse_remark("K3208-渝A-张三-VIP-微信")
    assert remark == services.Remark(code="K3208", region="渝A", name="张三", tier="VIP", channel="微信")
    assert services.parse_remark("k12 - 川B - 李四").code == "K12"
    assert services.parse_remark("张三") == services.Remark()


def test_remark_code_binds_at_once(synced, django_assert_max_num_queries):
    customer = services.bound_customer("agt_1", "K3208-渝A-张三-VIP-微信", "K3208-渝A-张三-VIP-微信")
    assert customer == Customer.objects.get(k_code="K3208")
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.method) == ("bound", "code")
    with django_assert_max_num_queries(1):
        assert services.bound_customer("agt_1", "K3208-渝A-张三-VIP-微信", "K3208-渝A-张三-VIP-微信") == customer


def test_phone_number_in_the_remark_binds(synced, simulator):
    customer = Customer.objects.exclude(mobile="").first()
    remark = f"王经理 {customer.mobile}"
    assert services.bound_customer("agt_1", remark, remark) == customer
    assert WeChatBinding.objects.get().method == "phone"


def test_name_is_only_a_suggestion_until_a_supervisor_confirms(synced):
    names = Counter(Contact.objects.values_list("name", flat=True))
    customer = next(c for c in Customer.objects.order_by("erp_id") if names[c.contact_name] == 1)
    assert services.bound_customer("agt_1", customer.contact_name, customer.contact_name) is None
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.method, binding.customer) == ("suggested", "name", customer)
    services.set_status(WeChatBinding.objects.all(), WeChatBinding.Status.BOUND)
    assert services.bound_customer("agt_1", customer.contact_name, customer.contact_name) == customer


def test_ambiguous_name_matches_nobody(synced):
    name = Customer.objects.get(erp_id=3001).contact_name
    other = Customer.objects.get(erp_id=3002)
    Customer.objects.filter(pk=other.pk).update(contact_name=name)
    assert services.match_customer(name) == (None, "")


def test_unknown_contact_is_recorded_unmatched_for_manual_binding(synced, django_assert_max_num_queries):
    assert services.bound_customer("agt_1", "群聊：周末徒步", "路人甲") is None
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.customer) == ("unmatched", None)
    with django_assert_max_num_queries(1):
        assert services.bound_customer("agt_1", "群聊：周末徒步", "路人甲") is None
    customer = Customer.objects.get(erp_id=3001)
    services.bind_manually(binding, customer)
    assert services.bound_customer("agt_1", "群聊：周末徒步", "路人甲") == customer


def test_chat_wide_binding_covers_every_sender_and_sender_binding_wins(synced):
    company, person = Customer.objects.get(erp_id=3001), Customer.objects.get(erp_id=3002)
    WeChatBindingFactory(chat_name="某某公司采购群", sender="", customer=company, status="bound")
    assert services.bound_customer("agt_1", "某某公司采购群", "随便谁") == company
    WeChatBindingFactory(chat_name="某某公司采购群", sender="老王", customer=person, status="bound")
    assert services.bound_customer("agt_1", "某某公司采购群", "老王") == person
    assert services.bound_customer("agt_2", "某某公司采购群", "随便谁") is None  # another agent's WeChat


def test_rejected_and_manual_bindings_survive_rematch(synced):
    customer = Customer.objects.get(erp_id=3001)
    manual = WeChatBindingFactory(chat_name="K3208-x", customer=customer, status="bound", method="manual")
    rejected = WeChatBindingFactory(chat_name="K3209-y", status="rejected")
    fresh = WeChatBindingFactory(chat_name="K3210-z")
    assert services.rematch(WeChatBinding.objects.all()) == 1
    manual.refresh_from_db(), rejected.refresh_from_db(), fresh.refresh_from_db()
    assert manual.customer == customer and rejected.status == "rejected"
    assert fresh.customer.k_code == "K3210" and fresh.status == "bound"


def test_admin_manual_binding_and_confirm_action(synced, admin_client):
    binding = WeChatBindingFactory(chat_name="陌生人", sender="陌生人")
    customer = Customer.objects.get(erp_id=3003)
    response = admin_client.post(
        f"/admin/customers/wechatbinding/{binding.pk}/change/",
        {"agent_id": "agt_1", "chat_name": "陌生人", "sender": "陌生人", "remark": "", "customer": customer.pk,
         "status": "unmatched"},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    binding.refresh_from_db()
    assert (binding.customer, binding.status, binding.method) == (customer, "bound", "manual")
    assert services.bound_customer("agt_1", "陌生人", "陌生人") == customer


def test_confirm_action_only_confirms_bindings_that_point_at_a_customer(synced, admin_client):
    suggested = WeChatBindingFactory(customer=Customer.objects.get(erp_id=3001), status="suggested", method="name")
    unmatched = WeChatBindingFactory()
    response = admin_client.post(
        "/admin/customers/wechatbinding/",
        {"action": "confirm", "_selected_action": [suggested.pk, unmatched.pk]},
        follow=True,
    )
    assert "已确认 1 条绑定" in response.content.decode()
    suggested.refresh_from_db(), unmatched.refresh_from_db()
    assert (suggested.status, unmatched.status) == ("bound", "unmatched")
    admin_client.post("/admin/customers/wechatbinding/", {"action": "reject", "_selected_action": [suggested.pk]})
    suggested.refresh_from_db()
    assert suggested.status == "rejected"
    assert services.bound_customer("agt_1", suggested.chat_name, "") is None
