"""seed_demo's staff groups: 主管 (supervisor) and 只读 (viewer), as the README's table lists them."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command

from apps.core import roles
from apps.core.tests.helpers import permission

pytestmark = pytest.mark.django_db

SUPERVISOR_HAS = {
    "monitoring.view_dashboard",
    "monitoring.view_trace",
    "wxmessages.view_stats",
    "customers.export_customer",
    "customers.view_customer",
    "customers.change_customer",
    "customers.change_wechatbinding",
    "customers.add_wechatbinding",
    "wxmessages.change_reply",  # the review queue
    "wxmessages.change_conversation",  # takeover
    "wxmessages.view_message",
    "rules.add_rule",
    "knowledge.change_entry",
    "engines.change_enginesetting",
    "engines.change_personality",
    "llm_gateway.change_provider",
    "costs.change_budget",
    "monitoring.change_alertrule",
}
SUPERVISOR_LACKS = {"erp.change_erpconnection", "erp.view_erpconnection", "auth.change_user", "agents.delete_agent"}
VIEWER_HAS = {
    "monitoring.view_dashboard",
    "wxmessages.view_stats",
    "rules.view_rule",
    "knowledge.view_entry",
    "engines.view_personality",
    "llm_gateway.view_provider",
    "costs.view_budget",
    "monitoring.view_alertrule",
    "agents.view_agent",
}
VIEWER_LACKS = {
    "monitoring.view_trace",
    "customers.export_customer",
    "customers.view_customer",
    "customers.view_wechatbinding",
    "wxmessages.view_message",
    "wxmessages.view_reply",
    "wxmessages.view_conversation",
    "engines.view_contactfact",
    "monitoring.view_notificationchannel",  # its targets carry webhook tokens
    "rules.change_rule",
    "costs.change_budget",
}


def names(group: Group) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_seed_demo_creates_both_groups_with_the_documented_permissions_idempotently():
    call_command("seed_demo")
    supervisor, viewer = Group.objects.get(name="主管"), Group.objects.get(name="只读")
    first = (names(supervisor), names(viewer))
    assert SUPERVISOR_HAS <= first[0] and not SUPERVISOR_LACKS & first[0], SUPERVISOR_HAS - first[0]
    assert VIEWER_HAS <= first[1] and not VIEWER_LACKS & first[1], VIEWER_HAS - first[1]
    assert all(name.split(".")[1].startswith("view_") for name in first[1])  # read-only, truly

    # Run again after an operator granted the viewer one more right: nothing lost, nothing doubled.
    viewer.permissions.add(permission("wxmessages.view_conversation"))
    call_command("seed_demo")
    assert Group.objects.filter(name__in=["主管", "只读"]).count() == 2
    assert names(Group.objects.get(name="主管")) == first[0]
    assert names(Group.objects.get(name="只读")) == first[1] | {"wxmessages.view_conversation"}


def test_the_groups_open_the_doors_they_promise(client):
    roles.seed_groups()
    User = get_user_model()
    viewer = User.objects.create_user("viewer", password="Pa55-word-v", is_staff=True)
    viewer.groups.add(Group.objects.get(name="只读"))
    client.force_login(viewer)
    assert client.get("/dashboard/").status_code == 200
    assert client.get("/api/v1/stats").status_code == 200
    assert client.get("/admin/rules/rule/").status_code == 200
    assert client.get("/dashboard/conversations/1/trace/").status_code == 403
    assert client.get("/api/v1/customers/export?format=csv").status_code == 403
    assert client.get("/admin/customers/customer/").status_code == 403
    assert client.get("/admin/wxmessages/message/").status_code == 403

    supervisor = User.objects.create_user("lead", password="Pa55-word-s", is_staff=True)
    supervisor.groups.add(Group.objects.get(name="主管"))
    client.force_login(supervisor)
    assert client.get("/dashboard/conversations/1/trace/").status_code == 404  # allowed in; no such conversation
    assert client.get("/api/v1/customers/export?format=csv").status_code == 200
    assert client.get("/admin/customers/wechatbinding/").status_code == 200
    assert client.get("/admin/wxmessages/reply/").status_code == 200


def test_a_role_naming_a_permission_that_does_not_exist_is_an_error(monkeypatch):
    monkeypatch.setitem(roles.ROLES, roles.VIEWER, {"rules.rule": ("view", "approve_rule")})
    with pytest.raises(LookupError, match="do not exist"):
        roles.role_permissions(roles.VIEWER)
