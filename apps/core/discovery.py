import importlib
from types import ModuleType

from django.conf import settings


def app_modules(submodule: str) -> list[ModuleType]:
    """`apps.<app>.<submodule>` for every project app that has one, in INSTALLED_APPS order."""
    modules = []
    for app in settings.INSTALLED_APPS:
        if not app.startswith("apps."):
            continue
        name = f"{app}.{submodule}"
        try:
            modules.append(importlib.import_module(name))
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    return modules
