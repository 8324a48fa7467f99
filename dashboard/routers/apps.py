from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard.routers"
    # The label the app has always had: its tables (dashboard_router, ...), migrations,
    # permissions (dashboard.tune_router) and templates/static (dashboard/...) keep it.
    label = "dashboard"
    verbose_name = "gnurouter dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dashboard.routers.roles import ensure_roles

        # Permissions exist only after migrate has run: make the roles then.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="dashboard-roles")
        from dashboard.routers.bootstrap import forget_admin_password

        # The first-run password file lasts until the administrator first signs in.
        user_logged_in.connect(forget_admin_password, dispatch_uid="dashboard-admin-password")
