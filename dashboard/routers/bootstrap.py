"""First-run setup: migrations and the first administrator account."""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from django.contrib.auth import get_user_model
from django.core.management import call_command

ADMIN_NAME = "admin"


class Output(Protocol):
    """Where the password is shown: a management command's stdout, or any text stream."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def migrate() -> None:
    call_command("migrate", interactive=False, verbosity=0)


def ensure_admin(out: Output) -> str | None:
    """Create `admin` with a random password if there is no superuser; print the password once."""
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(ADMIN_NAME, email="", password=password)
    out.write(
        f"Created the administrator account: user {ADMIN_NAME!r}, password {password!r}\n"
        "(shown this once; change it in the admin site, or with manage.py changepassword admin)\n"
    )
    out.flush()
    return password
