"""manage.py serve: daphne and the poller in one process, ready to use.

Applies migrations, creates the administrator account on first run, starts
daphne on HOST:PORT with the poller on the same event loop, and prints the
URL, then (until the administrator first signs in) the administrator's
password in a box, last, where the log lines before it cannot bury it.
`--port 0` picks a free port.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve the dashboard with daphne and poll the routers (migrations applied first)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
        parser.add_argument("--port", type=int, default=8000, help="port (0: any free port)")
        parser.add_argument(
            "--no-poller",
            action="store_true",
            help="serve only (a `manage.py watch_routers` elsewhere polls; needs REDIS_URL)",
        )
        parser.add_argument("--no-setup", action="store_true", help="skip migrate/admin setup")
        parser.add_argument(
            "--router",
            action="append",
            default=[],
            metavar="NAME=URL",
            help="watch this router (as `add_router NAME URL` does, its token from "
            "GNUROUTER_CONTROL_TOKEN) after migrating; repeatable",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # Installs Twisted's asyncio reactor: must come before anything imports a reactor.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer
        from twisted.internet import reactor as _reactor

        from dashboard.project.asgi import application
        from dashboard.routers import bootstrap

        admin_password: str | None = None
        if not options["no_setup"]:
            bootstrap.migrate()
            admin_password = bootstrap.ensure_admin() or bootstrap.unused_admin_password()
        for spec in options["router"]:
            # One process for migrate, add_router and serve: each Django start-up costs seconds.
            name, equals, url = spec.partition("=")
            if not equals:
                raise CommandError(f"--router: expected NAME=URL, got {spec!r}")
            call_command("add_router", name, url, stdout=io.StringIO())

        reactor: Any = _reactor  # zope interfaces are opaque to mypy
        poller_task: list[asyncio.Future[None]] = []
        poller: Any = None
        if not options["no_poller"]:
            from dashboard.routers.poller import Poller

            poller = Poller()

        def ready() -> None:
            urls = []
            for host, port in server.listening_addresses:
                shown = f"[{host}]" if ":" in host else host
                urls.append(f"http://{shown}:{port}/")
                self.stdout.write(f"dashboard: {urls[-1]}\n")
            if admin_password is not None:
                self.stdout.write(bootstrap.admin_box(admin_password, urls[0] if urls else None))
            self.stdout.flush()
            if poller is not None:
                reactor.callWhenRunning(
                    lambda: poller_task.append(asyncio.ensure_future(poller.run()))
                )

        def stop_poller() -> Any:
            if poller is None or not poller_task:
                return None
            poller.stop()
            return defer.Deferred.fromFuture(poller_task[0])

        reactor.addSystemEventTrigger("before", "shutdown", stop_poller)
        server = Server(
            application=application,
            endpoints=build_endpoint_description_strings(
                host=options["host"], port=options["port"]
            ),
            ready_callable=ready,
            verbosity=0,
        )
        server.run()
        sys.stdout.flush()
