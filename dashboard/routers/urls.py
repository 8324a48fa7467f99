"""The dashboard app's pages, namespaced `dashboard:` (e.g. `reverse("dashboard:router", ...)`).

Everything here needs a signed-in user (see views); sign-in itself is the project's
(dashboard/project/urls.py).
"""

from django.urls import path

from dashboard.routers import views

app_name = "dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("routers/<slug:name>/", views.router_detail, name="router"),
    path("routers/<slug:name>/history", views.router_history, name="router-history"),
    path("routers/<slug:name>/tune", views.router_tune, name="router-tune"),
    path("audit/", views.audit_log, name="audit"),
    path("pollers/", views.pollers, name="pollers"),
]
