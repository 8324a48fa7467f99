from django.apps import AppConfig
from django.db.models.signals import post_migrate


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "gnurouter dashboard"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from dashboard.roles import ensure_roles

        # Permissions exist only after migrate has run: make the roles then.
        post_migrate.connect(ensure_roles, sender=self, dispatch_uid="dashboard-roles")
