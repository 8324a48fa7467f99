"""The two operator roles, as Django groups: who may look, and who may also tune.

    viewer  sees every router, its history, and the audit log
    tuner   a viewer who may also change router parameters

Staff accounts manage routers and users in the admin site.  Put users in a
group in the admin, or with `manage.py add_user NAME --role viewer|tuner`.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission

VIEWER = "viewer"
TUNER = "tuner"
VIEW_PERMISSION = "dashboard.view_router"
TUNE_PERMISSION = "dashboard.tune_router"

_ROLE_PERMISSIONS = {
    VIEWER: ["view_router", "view_sample", "view_auditentry"],
    TUNER: ["view_router", "view_sample", "view_auditentry", "tune_router"],
}


def ensure_roles(**_signal: Any) -> None:
    """Create both groups with exactly their permissions (idempotent; run after migrate)."""
    for role, codenames in _ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = Permission.objects.filter(
            content_type__app_label="dashboard", codename__in=codenames
        )
        group.permissions.set(permissions)


def can_view(user: Any) -> bool:
    return bool(user.is_authenticated and user.has_perm(VIEW_PERMISSION))


def can_tune(user: Any) -> bool:
    return bool(user.is_authenticated and user.has_perm(TUNE_PERMISSION))
