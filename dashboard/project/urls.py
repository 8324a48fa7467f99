"""The site's URLs: sign-in and sign-out, the admin site, and the dashboard app at the root.

The app's own pages are namespaced: `{% url 'dashboard:router' name %}`,
`reverse("dashboard:overview")` (dashboard/routers/urls.py).  Its WebSocket
routes are in dashboard/routers/routing.py, served by dashboard/project/asgi.py.
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

admin.site.site_header = "gnurouter dashboard"

urlpatterns = [
    path("", include("dashboard.routers.urls")),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
]
