from django.contrib import admin
from django.http import Http404, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from apps.core.permissions import staff_permission_required
from apps.messages import selectors as messages_selectors
from apps.monitoring import services, tracing
from apps.monitoring.metrics import exposition_registry
from apps.monitoring.models import VIEW_DASHBOARD, VIEW_TRACE


@require_GET
def metrics(request):
    proxied = any(name in request.headers for name in ("X-Forwarded-For", "X-Real-IP", "Forwarded"))
    if not services.metrics_access_allowed(
        request.META.get("REMOTE_ADDR", ""), request.headers.get("Authorization", ""), proxied
    ):
        return HttpResponseForbidden("forbidden\n", content_type="text/plain")
    return HttpResponse(generate_latest(exposition_registry()), content_type=CONTENT_TYPE_LATEST)


@staff_permission_required(VIEW_DASHBOARD)
def dashboard(request):
    context = {**admin.site.each_context(request), "title": _("实时监控"), "snapshot": services.dashboard_snapshot()}
    return render(request, "monitoring/dashboard.html", context)


@staff_permission_required(VIEW_DASHBOARD)
def snapshot(request):
    return JsonResponse(services.dashboard_snapshot())


@staff_permission_required(VIEW_TRACE)
def trace(request, trace_id: str):
    context = {
        **admin.site.each_context(request),
        "title": _("消息追踪 %(id)s") % {"id": trace_id},
        "traces": [{"trace_id": trace_id, "label": trace_id, "events": tracing.events(trace_id)}],
    }
    return render(request, "monitoring/trace.html", context)


@staff_permission_required(VIEW_TRACE)
def conversation_trace(request, conversation_id: int):
    """The trace of each of the conversation's latest messages, newest first."""
    messages = messages_selectors.latest_messages(conversation_id, limit=20)
    if messages is None:
        raise Http404
    traces = [
        {
            "trace_id": message["trace_id"],
            "label": f"{message['sender']}: {message['content'][:60]}",
            "events": tracing.events(message["trace_id"]),
        }
        for message in messages
    ]
    context = {
        **admin.site.each_context(request),
        "title": _("会话追踪 #%(id)s") % {"id": conversation_id},
        "traces": traces,
    }
    return render(request, "monitoring/trace.html", context)
