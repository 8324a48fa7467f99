"""manage.py add_user NAME --role viewer|tuner: an operator account in one of the two roles."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

from dashboard.routers.roles import TUNER, VIEWER, ensure_roles


class Command(BaseCommand):
    help = "Create (or re-role) an operator: viewer (look) or tuner (look and tune)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", choices=(VIEWER, TUNER), default=VIEWER)
        parser.add_argument(
            "--password-env", help="environment variable holding the password (default: generate)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ensure_roles()
        users = get_user_model()
        user, created = users.objects.get_or_create(username=options["username"])
        password = None
        if options["password_env"]:
            password = os.environ[options["password_env"]]
        elif created:
            password = secrets.token_urlsafe(12)
        if password is not None:
            user.set_password(password)
            user.save()
        user.groups.remove(*Group.objects.filter(name__in=(VIEWER, TUNER)))
        user.groups.add(Group.objects.get(name=options["role"]))
        self.stdout.write(
            f"{'created' if created else 'updated'} {user.username} ({options['role']})\n"
        )
        if password is not None and not options["password_env"]:
            self.stdout.write(f"password: {password}\n")
