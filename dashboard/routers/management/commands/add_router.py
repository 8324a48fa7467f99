"""manage.py add_router NAME URL: watch a router (its token from the environment)."""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from dashboard.routers.models import Router


class Command(BaseCommand):
    help = "Add or update a router the dashboard watches."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", help="a short name (letters, digits, -, _)")
        parser.add_argument("url", help="the router's control URL, e.g. http://127.0.0.1:6347")
        parser.add_argument(
            "--token-env",
            default="GNUROUTER_CONTROL_TOKEN",
            help="environment variable holding the router's control token",
        )
        parser.add_argument("--disabled", action="store_true", help="add it, but do not poll it")

    def handle(self, *args: Any, **options: Any) -> None:
        router = Router.objects.filter(name=options["name"]).first() or Router(name=options["name"])
        router.base_url = options["url"]
        router.token = os.environ.get(options["token_env"], router.token)
        router.enabled = not options["disabled"]
        try:
            router.full_clean()
        except ValidationError as error:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in error.message_dict.items())
            ) from error
        created = router.pk is None
        router.save()
        token = "with a token" if router.token else "WITHOUT a token"
        verb = "added" if created else "updated"
        self.stdout.write(f"{verb} router {router.name} at {router.base_url} ({token})\n")
