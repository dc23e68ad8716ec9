from django.http import JsonResponse

from apps.core.services import readiness_report


async def healthz(request):
    return JsonResponse({"status": "ok"})


async def readyz(request):
    checks = await readiness_report()
    failed = sorted(name for name, result in checks.items() if not result["ok"])
    body = {"status": "ready" if not failed else "unavailable", "failed": failed, "checks": checks}
    return JsonResponse(body, status=200 if not failed else 503)
