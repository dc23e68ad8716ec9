"""The two staff roles `seed_demo` creates as groups (README "Who may see what" lists them).

Permissions are named by model label and codename strings, as settings name apps: core imports no app.
`ALL` grants every permission of a model, its own named ones (such as an export or a confirmation) included,
so a permission added to one of those models later reaches the supervisors on the next `seed_demo`.

- 主管 (supervisor): runs the service: review queue, conversations, customers and their WeChat bindings,
  rules, knowledge, engines, providers, budgets, alerting, the dashboard, message traces, statistics and the
  customer export.
- 只读 (viewer): watches the service: the dashboard, statistics, and read-only configuration (rules,
  knowledge, engines, providers, prices and budgets, agents, alert rules). No customer data: no customer
  records, bindings, conversations, message or reply text, traces, remembered facts or export — whoever
  must read what customers wrote or who they are is a supervisor.
"""

from django.db import transaction

SUPERVISOR = "主管"
VIEWER = "只读"
ALL = "*"
VIEW = ("view",)
EDIT = ("view", "change")

ROLES: dict[str, dict[str, str | tuple[str, ...]]] = {
    SUPERVISOR: {
        "agents.agent": EDIT,
        "customers.customer": (*EDIT, "export_customer"),
        "customers.contact": EDIT,
        "customers.wechatbinding": ALL,
        "customers.bindingchange": VIEW,
        "erp.contract": VIEW,
        "erp.syncrun": VIEW,
        "wxmessages.conversation": ALL,
        "wxmessages.message": (*VIEW, "view_stats"),
        "wxmessages.reply": ALL,
        "engines.enginesetting": ALL,
        "engines.engineswitch": VIEW,
        "engines.personality": ALL,
        "engines.conversationsummary": VIEW,
        "engines.contactfact": ALL,
        "knowledge.document": ALL,
        "knowledge.entry": ALL,
        "knowledge.synonym": ALL,
        "knowledge.customword": ALL,
        "knowledge.candidate": ALL,
        "knowledge.gap": ALL,
        "rules.rule": ALL,
        "rules.ratelimit": ALL,
        "rules.adminnickname": ALL,
        "rules.chatmute": ALL,
        "llm_gateway.provider": ALL,
        "llm_gateway.route": ALL,
        "llm_gateway.routeentry": ALL,
        "costs.modelprice": ALL,
        "costs.budget": ALL,
        "costs.budgetalert": VIEW,
        "costs.usagerecord": VIEW,
        "monitoring.notificationchannel": ALL,
        "monitoring.alertrule": ALL,
        "monitoring.alertevent": VIEW,
        "monitoring.monitoringaccess": ("view_dashboard", "view_trace"),
    },
    VIEWER: {
        "agents.agent": VIEW,
        "wxmessages.message": ("view_stats",),
        "engines.enginesetting": VIEW,
        "engines.engineswitch": VIEW,
        "engines.personality": VIEW,
        "knowledge.document": VIEW,
        "knowledge.entry": VIEW,
        "knowledge.synonym": VIEW,
        "knowledge.customword": VIEW,
        "rules.rule": VIEW,
        "rules.ratelimit": VIEW,
        "llm_gateway.provider": VIEW,
        "llm_gateway.route": VIEW,
        "llm_gateway.routeentry": VIEW,
        "costs.modelprice": VIEW,
        "costs.budget": VIEW,
        "costs.budgetalert": VIEW,
        "costs.usagerecord": VIEW,
        "monitoring.alertrule": VIEW,
        "monitoring.alertevent": VIEW,
        "monitoring.monitoringaccess": ("view_dashboard",),
    },
}


def role_permissions(role: str):
    """The Permission rows of a role (a missing model or codename is an error: the table and the code agree)."""
    from django.contrib.auth.models import Permission
    from django.db.models import Q

    wanted, expected = Q(pk__in=[]), 0
    for label, grant in ROLES[role].items():
        app_label, model = label.split(".")
        of_model = Q(content_type__app_label=app_label, content_type__model=model)
        if grant == ALL:
            if not Permission.objects.filter(of_model).exists():
                raise LookupError(f"role {role}: no permissions for {label}")
            wanted |= of_model
            continue
        codenames = [name if "_" in name else f"{name}_{model}" for name in grant]  # "view" → view_<model>
        wanted |= of_model & Q(codename__in=codenames)
        expected += len(codenames)
    permissions = list(Permission.objects.filter(wanted).select_related("content_type"))
    named = sum(1 for p in permissions if ROLES[role][f"{p.content_type.app_label}.{p.content_type.model}"] != ALL)
    if named != expected:
        raise LookupError(f"role {role}: {expected - named} of its named permissions do not exist")
    return permissions


def seed_groups() -> list[str]:
    """Create the role groups and grant what is missing (never revokes what an operator added)."""
    from django.contrib.auth.models import Group

    done = []
    with transaction.atomic():
        for role in ROLES:
            group, created = Group.objects.get_or_create(name=role)
            group.permissions.add(*role_permissions(role))
            done.append(f"{role} ({'created' if created else 'updated'})")
    return done
