"""Staff manage routers (name, control URL, token) and users here."""

from typing import Any

from django import forms
from django.contrib import admin

from dashboard.routers.models import AuditEntry, Router


class RouterForm(forms.ModelForm):
    token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="the router's control token; leave empty to keep the current one",
    )

    class Meta:
        model = Router
        fields = ["name", "base_url", "token", "enabled"]

    def clean_token(self) -> str:
        token = self.cleaned_data.get("token") or ""
        if not token and self.instance.pk:
            return self.instance.token
        return token


@admin.register(Router)
class RouterAdmin(admin.ModelAdmin):
    form = RouterForm
    list_display = ["name", "base_url", "enabled", "up", "last_seen", "listen"]
    readonly_fields = ["up", "last_seen", "last_error", "listen"]


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ["time", "username", "router_name", "parameter", "old", "new", "accepted"]
    list_filter = ["accepted", "router_name"]

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False
