from django.http import HttpResponse, JsonResponse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.views import defaults

from apps.core.services import readiness_report


async def healthz(request):
    return JsonResponse({"status": "ok"})


async def readyz(request):
    checks = await readiness_report()
    failed = sorted(name for name, result in checks.items() if not result["ok"])
    body = {"status": "ready" if not failed else "unavailable", "failed": failed, "checks": checks}
    return JsonResponse(body, status=200 if not failed else 503)


# Django's own error pages (URL not found, SuspiciousOperation, an unhandled exception) under /api/ answer the
# API's error body like every DRF error does (apps.core.api); elsewhere Django's pages.
API_PREFIX = "/api/"


def _error_page(status: int, detail, code: str, page):
    def view(request, *args, **kwargs):
        if request.path.startswith(API_PREFIX):
            return JsonResponse({"detail": str(detail), "code": code}, status=status)
        return page(request, *args, **kwargs)

    return view


bad_request = _error_page(400, _("请求无效。"), "bad_request", defaults.bad_request)
permission_denied = _error_page(403, _("您没有执行该操作的权限。"), "permission_denied", defaults.permission_denied)
page_not_found = _error_page(404, _("未找到。"), "not_found", defaults.page_not_found)
server_error = _error_page(500, _("服务器内部错误，请稍后再试。"), "server_error", defaults.server_error)


def login_locked_out(request, original_response=None, credentials=None):
    """django-axes' lockout answer (AXES_LOCKOUT_CALLABLE): 429 with Retry-After, `{detail, code}` for API
    clients and a short page for a browser on the admin login."""
    from axes.helpers import get_cool_off

    cool_off = get_cool_off(request)
    retry_after = max(1, int(cool_off.total_seconds())) if cool_off else 3600
    detail = _("登录失败次数过多，请 %(minutes)d 分钟后再试。") % {"minutes": max(1, round(retry_after / 60))}
    if request.accepts("text/html"):
        response = HttpResponse(
            format_html("<!doctype html><title>429</title><h1>429</h1><p>{}</p>", detail), status=429
        )
    else:
        response = JsonResponse({"detail": detail, "code": "throttled"}, status=429)
    response["Retry-After"] = str(retry_after)
    return response
