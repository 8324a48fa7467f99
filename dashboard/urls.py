"""Dashboard URLs.  Everything but the login page needs a signed-in user (see views)."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from dashboard import views

admin.site.site_header = "gnurouter dashboard"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("routers/<slug:name>/", views.router_detail, name="router"),
    path("routers/<slug:name>/history", views.router_history, name="router-history"),
    path("routers/<slug:name>/tune", views.router_tune, name="router-tune"),
    path("audit/", views.audit_log, name="audit"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
