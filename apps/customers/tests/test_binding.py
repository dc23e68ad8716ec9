"""WeChat contact ↔ customer binding: names the customer can edit only ever suggest; a supervisor confirms,
staff bind by hand or by their own remark; every change is recorded."""

from collections import Counter

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Permission, User

from apps.customers import selectors, services
from apps.customers.models import BindingChange, Contact, Customer, WeChatBinding
from apps.customers.tests.factories import WeChatBindingFactory

pytestmark = pytest.mark.django_db
CODE_NICKNAME = "K3208-渝A-张三-VIP-微信"


@pytest.fixture
def supervisor():
    user = User.objects.create_user("zhuguan", password="x-Pa55-word", is_staff=True)
    wanted = ("view_wechatbinding", "change_wechatbinding", "confirm_wechatbinding", "view_bindingchange")
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="customers", codename__in=wanted))
    return User.objects.get(pk=user.pk)  # fresh permission cache


def test_parse_remark_pattern():
    remark = services.parse_remark(CODE_NICKNAME)
    assert remark == services.Remark(code="K3208", region="渝A", name="张三", tier="VIP", channel="微信")
    assert services.parse_remark("k12 - 川B - 李四").code == "K12"
    assert services.parse_remark("张三") == services.Remark()


def test_code_in_a_nickname_is_only_a_suggestion(synced, django_assert_max_num_queries):
    assert services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME) is None
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.method, binding.source, binding.matched_text) == (
        "suggested",
        "code",
        "sender",
        "K3208",
    )
    assert binding.customer == Customer.objects.get(k_code="K3208")
    (change,) = BindingChange.objects.all()
    assert (change.action, change.actor, change.actor_name) == ("suggest", None, "system:first-seen")
    assert (change.from_status, change.to_status, change.to_customer) == ("", "suggested", binding.customer)
    with django_assert_max_num_queries(1):
        assert services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME) is None


def test_phone_in_a_nickname_is_only_a_suggestion(synced):
    customer = Customer.objects.exclude(mobile="").first()
    nickname = f"王经理 {customer.mobile}"
    assert services.identify_contact("agt_1", nickname, nickname) is None
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.method, binding.customer, binding.matched_text) == (
        "suggested",
        "phone",
        customer,
        customer.mobile,
    )


def test_a_group_member_is_never_bound_by_nickname(synced):
    customer = Customer.objects.get(k_code="K3208")
    group = "K3209 车友群"  # a group's name says nothing about its members: not matched for them
    assert services.identify_contact("agt_1", group, CODE_NICKNAME, is_group=True) is None
    member = WeChatBinding.objects.get()
    assert (member.status, member.source, member.customer, member.is_group) == (
        "suggested",
        "group_member",
        customer,
        True,
    )
    assert services.identify_contact("agt_1", group, "路人乙", is_group=True) is None
    assert WeChatBinding.objects.get(sender="路人乙").status == "unmatched"


def test_a_confirmed_suggestion_is_trusted_and_the_confirmation_recorded(synced, supervisor):
    services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME)
    customer = Customer.objects.get(k_code="K3208")

    assert services.confirm(WeChatBinding.objects.all(), supervisor) == 1

    assert services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME) == customer
    change = BindingChange.objects.get(action="confirm")
    assert (change.actor, change.actor_name) == (supervisor, "zhuguan")
    assert (change.from_status, change.to_status) == ("suggested", "bound")
    assert change.from_customer == change.to_customer == customer
    assert (change.method, change.source) == ("code", "sender")


def test_name_suggestion_confirm_and_reject(synced, supervisor):
    names = Counter(Contact.objects.values_list("name", flat=True))
    customer = next(c for c in Customer.objects.order_by("erp_id") if names[c.contact_name] == 1)
    assert services.identify_contact("agt_1", customer.contact_name, customer.contact_name) is None
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.method, binding.customer) == ("suggested", "name", customer)
    assert services.reject(WeChatBinding.objects.all(), supervisor) == 1
    assert services.confirm(WeChatBinding.objects.all(), supervisor) == 0  # only suggestions are confirmed
    assert services.identify_contact("agt_1", customer.contact_name, customer.contact_name) is None
    assert list(BindingChange.objects.order_by("id").values_list("action", "to_status")) == [
        ("suggest", "suggested"),
        ("reject", "rejected"),
    ]


def test_ambiguous_name_matches_nobody(synced):
    name = Customer.objects.get(erp_id=3001).contact_name
    other = Customer.objects.get(erp_id=3002)
    Customer.objects.filter(pk=other.pk).update(contact_name=name)
    assert services.match_customer(name) == (None, "", "")


def test_unknown_contact_is_recorded_unmatched_for_manual_binding(synced, supervisor, django_assert_max_num_queries):
    assert services.identify_contact("agt_1", "群聊：周末徒步", "路人甲", is_group=True) is None
    binding = WeChatBinding.objects.get()
    assert (binding.status, binding.customer) == ("unmatched", None)
    with django_assert_max_num_queries(1):
        assert services.identify_contact("agt_1", "群聊：周末徒步", "路人甲", is_group=True) is None
    customer = Customer.objects.get(erp_id=3001)
    services.bind(binding, customer, supervisor)
    assert services.identify_contact("agt_1", "群聊：周末徒步", "路人甲") == customer
    change = BindingChange.objects.get(action="bind")
    assert (change.actor, change.from_status, change.to_status, change.to_customer, change.source) == (
        supervisor,
        "unmatched",
        "bound",
        customer,
        "staff",
    )
    services.bind(binding, None, supervisor)
    assert selectors.trusted_customer("agt_1", "群聊：周末徒步", "路人甲") is None
    assert BindingChange.objects.get(action="unbind").from_customer == customer


def test_staff_remark_binds_by_code_and_suggests_by_name(synced, supervisor):
    binding = services.note_contact("agt_1", "微信用户8848", "微信用户8848")
    assert binding.status == "unmatched"
    services.set_remark(binding, "K3209-川B-李四-VIP-微信", supervisor)
    assert services.identify_contact("agt_1", "微信用户8848", "微信用户8848") == Customer.objects.get(k_code="K3209")
    binding.refresh_from_db()
    assert (binding.status, binding.source, binding.method) == ("bound", "remark", "code")
    assert BindingChange.objects.get(action="remark").actor == supervisor
    # The remark no longer names anyone: the binding falls back to what the names suggest (nothing here).
    services.set_remark(binding, "老客户", supervisor)
    binding.refresh_from_db()
    assert (binding.status, binding.customer) == ("unmatched", None)
    name_only = Customer.objects.get(erp_id=3001).name
    services.set_remark(binding, name_only, supervisor)
    binding.refresh_from_db()
    assert (binding.status, binding.source, binding.method) == ("suggested", "remark", "name")


def test_chat_wide_binding_covers_every_sender_and_sender_binding_wins(synced):
    company, person = Customer.objects.get(erp_id=3001), Customer.objects.get(erp_id=3002)
    WeChatBindingFactory(chat_name="某某公司采购群", sender="", customer=company, status="bound")
    assert services.identify_contact("agt_1", "某某公司采购群", "随便谁", is_group=True) == company
    WeChatBindingFactory(chat_name="某某公司采购群", sender="老王", customer=person, status="bound")
    assert services.identify_contact("agt_1", "某某公司采购群", "老王", is_group=True) == person
    assert services.identify_contact("agt_2", "某某公司采购群", "随便谁", is_group=True) is None  # another WeChat


def test_rematch_only_touches_undecided_bindings(synced, supervisor):
    customer = Customer.objects.get(erp_id=3001)
    manual = WeChatBindingFactory(chat_name="K3208-x", customer=customer, status="bound", method="manual")
    rejected = WeChatBindingFactory(chat_name="K3209-y", status="rejected")
    fresh = WeChatBindingFactory(chat_name="K3210-z")
    assert services.rematch(WeChatBinding.objects.all(), supervisor) == 1
    manual.refresh_from_db(), rejected.refresh_from_db(), fresh.refresh_from_db()
    assert manual.customer == customer and rejected.status == "rejected"
    assert fresh.customer.k_code == "K3210" and fresh.status == "suggested"
    assert BindingChange.objects.get().actor == supervisor


def test_upgrade_demotes_nickname_bindings_and_keeps_what_people_decided(synced):
    """The data migration: a binding made at once from a nickname's code or phone becomes a suggestion;
    manual bindings, confirmed name suggestions and bindings resting on the staff's remark stay bound."""
    from importlib import import_module

    migration = import_module("apps.customers.migrations.0003_binding_suggestions_and_audit")
    k3208, k3209, k3210 = (Customer.objects.get(k_code=code) for code in ("K3208", "K3209", "K3210"))
    auto = WeChatBindingFactory(chat_name=CODE_NICKNAME, customer=k3208, status="bound", method="code")
    remark = WeChatBindingFactory(
        chat_name="微信用户", remark="K3209-川B", customer=k3209, status="bound", method="code"
    )
    manual = WeChatBindingFactory(chat_name="老王", customer=k3210, status="bound", method="manual")
    confirmed = WeChatBindingFactory(chat_name=k3210.contact_name, customer=k3210, status="bound", method="name")

    migration.split_trust(django_apps, None)

    for binding in (auto, remark, manual, confirmed):
        binding.refresh_from_db()
    assert (auto.status, auto.source) == ("suggested", "chat_name")
    assert (remark.status, remark.source) == ("bound", "remark")
    assert (manual.status, manual.source) == ("bound", "staff")
    assert confirmed.status == "bound"
    (change,) = BindingChange.objects.all()
    assert (change.binding, change.action, change.actor_name) == (auto, "migrate", "system:migration")
    assert (change.from_status, change.to_status, change.to_customer) == ("bound", "suggested", k3208)


# --- admin, as a staff user with the named permissions -----------------------------------------------------
def test_admin_lists_suggestions_with_one_click_confirm(synced, client, supervisor):
    services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME)
    services.identify_contact("agt_1", "路人丙", "路人丙")
    binding = WeChatBinding.objects.get(status="suggested")
    client.force_login(supervisor)

    page = client.get("/admin/customers/wechatbinding/?status__exact=suggested").content.decode()
    assert CODE_NICKNAME in page and "路人丙" not in page
    assert f'formaction="/admin/customers/wechatbinding/{binding.pk}/confirm/"' in page
    assert client.get(f"/admin/customers/wechatbinding/{binding.pk}/confirm/").status_code == 405

    response = client.post(f"/admin/customers/wechatbinding/{binding.pk}/confirm/", follow=True)

    assert "已确认 1 条绑定" in response.content.decode()
    assert services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME) == Customer.objects.get(k_code="K3208")
    assert BindingChange.objects.get(action="confirm").actor == supervisor
    other = services.note_contact("agt_1", "K3209-冒充", "K3209-冒充")
    response = client.post(f"/admin/customers/wechatbinding/{other.pk}/reject/", follow=True)
    assert "已拒绝 1 条建议" in response.content.decode()
    other.refresh_from_db()
    assert other.status == "rejected"


def test_admin_batch_confirm_and_reject(synced, client, supervisor):
    for code in ("K3208", "K3209", "K3210", "K3211"):
        services.identify_contact("agt_1", "车友群", f"{code}-渝A-车主", is_group=True)
    services.identify_contact("agt_1", "车友群", "路人丁", is_group=True)
    chosen = list(WeChatBinding.objects.filter(sender__startswith="K32").order_by("sender"))
    unmatched = WeChatBinding.objects.get(sender="路人丁")
    client.force_login(supervisor)

    response = client.post(
        "/admin/customers/wechatbinding/",
        {"action": "confirm", "_selected_action": [b.pk for b in chosen[:3]] + [unmatched.pk]},
        follow=True,
    )
    assert "已确认 3 条绑定" in response.content.decode()
    response = client.post(
        "/admin/customers/wechatbinding/", {"action": "reject", "_selected_action": [chosen[3].pk]}, follow=True
    )
    assert "已拒绝 1 条建议" in response.content.decode()

    statuses = dict(WeChatBinding.objects.values_list("sender", "status"))
    assert statuses == {
        "K3208-渝A-车主": "bound",
        "K3209-渝A-车主": "bound",
        "K3210-渝A-车主": "bound",
        "K3211-渝A-车主": "rejected",
        "路人丁": "unmatched",
    }
    assert BindingChange.objects.filter(action="confirm", actor=supervisor).count() == 3
    assert services.identify_contact("agt_1", "车友群", "K3211-渝A-车主", is_group=True) is None


def test_admin_manual_binding_is_recorded(synced, client, supervisor):
    binding = WeChatBindingFactory(chat_name="陌生人", sender="陌生人")
    customer = Customer.objects.get(erp_id=3003)
    client.force_login(supervisor)
    assert client.get("/admin/customers/wechatbinding/add/").status_code == 403  # no add permission
    page = client.get(f"/admin/customers/wechatbinding/{binding.pk}/change/").content.decode()
    assert "陌生人" in page and "绑定变更记录" in page
    response = client.post(
        f"/admin/customers/wechatbinding/{binding.pk}/change/",
        {"remark": "", "customer": customer.pk, "changes-TOTAL_FORMS": 0, "changes-INITIAL_FORMS": 0},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    binding.refresh_from_db()
    assert (binding.customer, binding.status, binding.method, binding.source) == (customer, "bound", "manual", "staff")
    assert services.identify_contact("agt_1", "陌生人", "陌生人") == customer
    assert BindingChange.objects.get().actor == supervisor


def test_staff_without_the_confirm_permission_cannot_confirm(synced, client):
    services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME)
    binding = WeChatBinding.objects.get()
    clerk = User.objects.create_user("kefu", password="x-Pa55-word", is_staff=True)
    clerk.user_permissions.set(Permission.objects.filter(codename__in=["view_wechatbinding", "change_wechatbinding"]))
    client.force_login(clerk)

    assert f"{binding.pk}/confirm/" not in client.get("/admin/customers/wechatbinding/").content.decode()
    assert client.post(f"/admin/customers/wechatbinding/{binding.pk}/confirm/").status_code == 403
    client.post("/admin/customers/wechatbinding/", {"action": "confirm", "_selected_action": [binding.pk]})
    binding.refresh_from_db()
    assert binding.status == "suggested"
    assert selectors.trusted_customer("agt_1", CODE_NICKNAME, CODE_NICKNAME) is None


def test_the_audit_trail_is_read_only_in_admin(synced, client, supervisor):
    services.identify_contact("agt_1", CODE_NICKNAME, CODE_NICKNAME)
    services.confirm(WeChatBinding.objects.all(), supervisor)
    change = BindingChange.objects.get(action="confirm")
    client.force_login(supervisor)

    listing = client.get("/admin/customers/bindingchange/").content.decode()
    assert "zhuguan" in listing and "system:first-seen" in listing
    assert client.get("/admin/customers/bindingchange/add/").status_code == 403
    assert client.post(f"/admin/customers/bindingchange/{change.pk}/change/", {"actor_name": "x"}).status_code == 403
    assert client.post(f"/admin/customers/bindingchange/{change.pk}/delete/", {"post": "yes"}).status_code == 403
    assert (
        client.post(f"/admin/customers/wechatbinding/{change.binding_id}/delete/", {"post": "yes"}).status_code == 403
    )
    change.refresh_from_db()
    assert change.actor_name == "zhuguan"
