from django.urls import path

from dashboard.consumers import OverviewConsumer, RouterConsumer

websocket_urlpatterns = [
    path("ws/overview/", OverviewConsumer.as_asgi()),
    path("ws/routers/<slug:name>/", RouterConsumer.as_asgi()),
]
