"""manage.py watch_routers: the poller on its own, beside daphne workers sharing REDIS_URL.

Run as many as you like (here or on other machines sharing DATABASE_URL): they split the
routers between them through leases (dashboard.routers.sharing).
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Poll every enabled router, feed the live views (channel layer) and store history."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="poll each router once and report")
        parser.add_argument(
            "--name",
            default=None,
            help="this poller's name among the pollers (default: host:pid:random)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from dashboard.routers.poller import Poller

        if not options["once"] and "InMemory" in settings.CHANNEL_LAYERS["default"]["BACKEND"]:
            self.stderr.write(
                "watch_routers: the channel layer is in-memory, so only history is kept; "
                "set REDIS_URL for live views served by other processes (or use manage.py serve)\n"
            )
        asyncio.run(self._main(Poller(name=options["name"]), options["once"]))

    async def _main(self, poller: Any, once: bool) -> None:
        if once:
            await poller.refresh_routers(start_tasks=False)
            if not poller.watches:
                raise CommandError("no enabled routers (manage.py add_router NAME URL)")
            for watch in poller.watches.values():
                ok = await poller.poll(watch)
                self.stdout.write(
                    f"{watch.name}: {'up ' + watch.listen if ok else 'down: ' + watch.error}\n"
                )
            await poller.close()
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, poller.stop)
        await poller.run()
