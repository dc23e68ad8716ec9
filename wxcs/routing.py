"""WebSocket routes; each app contributes its own `routing.websocket_urlpatterns`."""

from apps.core.discovery import app_modules


def websocket_urlpatterns() -> list:
    return [pattern for module in app_modules("routing") for pattern in module.websocket_urlpatterns]
