"""First-run setup: migrations and the first administrator account.

The administrator's password is made on the first run and shown in a box at
the end of start-up, after the dashboard's URL, where the log lines that
follow cannot bury it.  It is also written to `var/admin_password` (mode 600)
until the administrator first signs in, and shown again at each start until
then, so a password that scrolled away is not lost.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command

ADMIN_NAME = "admin"


class Output(Protocol):
    """Where the password is shown: a management command's stdout, or any text stream."""

    def write(self, text: str, /) -> Any: ...

    def flush(self) -> Any: ...


def migrate() -> None:
    call_command("migrate", interactive=False, verbosity=0)


def password_file() -> Path:
    return Path(settings.VAR_DIR) / "admin_password"


def _write_password_file(password: str) -> None:
    path = password_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 600 from the start: never readable by others, not even for a moment.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    os.chmod(path, 0o600)  # an older file of another mode keeps its mode through O_TRUNC


def ensure_admin(out: Output | None = None) -> str | None:
    """Create `admin` with a random password if there is no superuser; its password (also
    written to var/admin_password, and to `out` when given), or None if there was one."""
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser(ADMIN_NAME, email="", password=password)
    _write_password_file(password)
    if out is not None:
        out.write(admin_box(password))
        out.flush()
    return password


def unused_admin_password() -> str | None:
    """The first-run password while the administrator has not signed in with it yet."""
    try:
        password = password_file().read_text().strip()
    except OSError:
        return None
    admin = get_user_model().objects.filter(username=ADMIN_NAME).first()
    if admin is None or admin.last_login is not None or not admin.check_password(password):
        return None
    return password


def forget_admin_password(sender: Any, user: Any = None, **_: Any) -> None:
    """`user_logged_in`: the administrator has signed in, the password file has done its job."""
    if user is not None and user.get_username() == ADMIN_NAME:
        password_file().unlink(missing_ok=True)


def admin_box(password: str, url: str | None = None) -> str:
    """The sign-in details, boxed so they stand out of the log around them."""
    lines = [
        f"Dashboard administrator: user {ADMIN_NAME!r}, password {password!r}",
        *([f"Sign in at {url}"] if url else []),
        f"The password is in {password_file()} until the first sign-in;",
        "change it in the admin site or with: manage.py changepassword admin",
    ]
    width = max(len(line) for line in lines)
    rule = "+" + "-" * (width + 2) + "+"
    return "\n".join([rule, *(f"| {line.ljust(width)} |" for line in lines), rule]) + "\n"
