"""URL map. Each app may ship `urls.py` with `api_urlpatterns` (mounted under /api/v1/) and/or
`urlpatterns` (mounted at the root); they are picked up here so apps stay self-contained."""

from csp.constants import SELF, UNSAFE_INLINE
from csp.decorators import csp_replace
from django.contrib import admin
from django.urls import include, path
from django.utils.translation import gettext_lazy as _
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from apps.core import views as core_views
from apps.core.discovery import app_modules


def _app_urls(attribute: str) -> list:
    return [pattern for module in app_modules("urls") for pattern in getattr(module, attribute, [])]


admin.site.site_header = _("微信客服中台")
admin.site.site_title = _("微信客服中台")
admin.site.index_title = _("管理后台")

handler400 = core_views.bad_request
handler403 = core_views.permission_denied
handler404 = core_views.page_not_found
handler500 = core_views.server_error

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Under the CSP: the split view serves Swagger UI's start-up script as a file (no inline script); the UI
    # injects its own <style> element, allowed on this page only.
    path(
        "api/docs/",
        csp_replace({"style-src-elem": [SELF, UNSAFE_INLINE]})(SpectacularSwaggerSplitView.as_view(url_name="schema")),
        name="api-docs",
    ),
    path("api/v1/", include(_app_urls("api_urlpatterns"))),
    *_app_urls("urlpatterns"),
]
