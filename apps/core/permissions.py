"""Staff access to named permissions, checked in one place per kind of door.

- `staff_permission_required(perm)`: a Django view. Anonymous or non-staff: the admin login page (like
  admin); a staff user without `perm`: 403.
- `StaffPermission(perm)`: a DRF permission. The API's authentication answers 401/403 as usual; a staff
  session without `perm`: 403.
- `admin_page(model_admin, view)`: a custom page among a ModelAdmin's URLs (a report, a preview): the admin
  login like any admin page, and 403 without the model's view permission.
- `session_allows(session_key, perm)`: a WebSocket, re-checked on every event it sends (the session,
  the user, its staff flag and permissions are read again, so a logout or a revoked right stops the feed).

A superuser has every permission (Django's ModelBackend).
"""

from functools import wraps
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission


def staff_can(user, perm: str) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff and user.has_perm(perm))


def staff_permission_required(perm: str):
    def decorator(view):
        @staff_member_required
        @wraps(view)
        def checked(request, *args, **kwargs):
            if not staff_can(request.user, perm):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return checked

    return decorator


def admin_page(model_admin, view):
    def checked(request, *args, **kwargs):
        if not model_admin.has_view_permission(request):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return model_admin.admin_site.admin_view(wraps(view)(checked))


def StaffPermission(perm: str, detail: str = "") -> type[BasePermission]:  # noqa: N802 - a class factory
    """A DRF permission class: an authenticated staff user holding `perm` (`detail`: the 403's, else DRF's)."""

    class HasStaffPermission(BasePermission):
        message = detail or None  # None: DRF's own (translated) detail

        def has_permission(self, request, view) -> bool:
            return staff_can(request.user, perm)

    return HasStaffPermission


def session_allows(session_key: str | None, perm: str) -> bool:
    """Sync (run it on `run_db`): the session's user, read afresh, is active staff holding `perm`."""
    if not session_key:
        return False
    from django.contrib.auth import get_user

    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)
    return staff_can(get_user(SimpleNamespace(session=session)), perm)
