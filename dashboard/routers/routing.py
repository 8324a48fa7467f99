"""The app's WebSocket routes (served by dashboard/project/asgi.py, not Django's URLconf)."""

from django.urls import path

from dashboard.routers.consumers import OverviewConsumer, RouterConsumer

websocket_urlpatterns = [
    path("ws/overview/", OverviewConsumer.as_asgi()),
    path("ws/routers/<slug:name>/", RouterConsumer.as_asgi()),
]


def router_websocket_path(name: str) -> str:
    """The live feed of one router's page (`reverse` knows no WebSocket routes)."""
    return f"/ws/routers/{name}/"
