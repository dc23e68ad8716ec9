from django.http import HttpResponse, JsonResponse
from django.utils.html import format_html
from django.utils.translation import gettext as _

from apps.core.services import readiness_report


async def healthz(request):
    return JsonResponse({"status": "ok"})


async def readyz(request):
    checks = await readiness_report()
    failed = sorted(name for name, result in checks.items() if not result["ok"])
    body = {"status": "ready" if not failed else "unavailable", "failed": failed, "checks": checks}
    return JsonResponse(body, status=200 if not failed else 503)


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
