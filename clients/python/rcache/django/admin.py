"""The "Purge cached pages" admin action, for every model registered with ``purge_on_save``."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import messages


def purge_cached_pages(modeladmin: Any, request: Any, queryset: Any) -> None:
    """Purge what ``purge_on_save`` purges for each selected object, now."""
    from .purging import purge_instances

    n = purge_instances(list(queryset))
    modeladmin.message_user(request, f"Purged {n} cached page(s).", messages.SUCCESS)


purge_cached_pages.short_description = "Purge cached pages"  # type: ignore[attr-defined]
purge_cached_pages.allowed_permissions = ("change",)  # type: ignore[attr-defined]


def install_admin_action() -> None:
    """Add the action to the ModelAdmin of every ``purge_on_save`` model registered on the
    default admin site.  Called by ``purge_on_save`` and when the app registry is
    ready, so the order of ``purge_on_save`` calls and admin registration does not matter."""
    if not apps.models_ready or not apps.is_installed("django.contrib.admin"):
        return
    from django.contrib import admin

    from .purging import REGISTRY

    for model, modeladmin in admin.site._registry.items():
        if REGISTRY.get(model) and purge_cached_pages not in (modeladmin.actions or ()):
            modeladmin.actions = [*(modeladmin.actions or ()), purge_cached_pages]
