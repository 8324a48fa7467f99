"""The ASGI application daphne serves: Django for HTTP, the live feeds for WebSockets.

manage.py serve            daphne + the poller in one process (the default)
daphne dashboard.project.asgi:application
                           HTTP/WebSockets only: run `manage.py watch_routers` beside
                           it, with REDIS_URL set so both share a channel layer
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.project.settings")

from channels.auth import AuthMiddlewareStack
from channels.routing import ProtocolTypeRouter, URLRouter
from channels.security.websocket import AllowedHostsOriginValidator
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from dashboard.routers.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # The static files are few and small (the vendored chart library, one script,
        # one stylesheet): Django serves them itself, so there is nothing else to deploy.
        "http": ASGIStaticFilesHandler(django_application),
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
