"""The dashboard's Django layout: the project (dashboard/project/) and its app (dashboard/routers/,
label "dashboard"), namespaced URLs, migrations that match the models, the commands the README
and scripts/run use."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command, get_commands
from django.db import connection
from django.urls import reverse

from dashboard.routers.models import AuditEntry, Router, Sample
from tests.dashboard.conftest import ROOT


def test_the_project_serves_the_app_under_its_old_label() -> None:
    assert settings.ROOT_URLCONF == "dashboard.project.urls"
    assert settings.ASGI_APPLICATION == "dashboard.project.asgi.application"
    app = apps.get_app_config("dashboard")
    assert app.name == "dashboard.routers"
    # Existing databases keep their tables and permissions.
    assert [m._meta.db_table for m in (Router, Sample, AuditEntry)] == [
        "dashboard_router",
        "dashboard_sample",
        "dashboard_auditentry",
    ]


def test_the_apps_urls_are_namespaced() -> None:
    assert reverse("dashboard:overview") == "/"
    assert reverse("dashboard:router", args=["edge-1"]) == "/routers/edge-1/"
    assert reverse("dashboard:router-history", args=["edge-1"]) == "/routers/edge-1/history"
    assert reverse("dashboard:router-tune", args=["edge-1"]) == "/routers/edge-1/tune"
    assert reverse("dashboard:audit") == "/audit/"
    assert reverse("login") == "/accounts/login/"
    assert settings.LOGIN_REDIRECT_URL == "dashboard:overview"


def test_the_management_commands_are_the_apps() -> None:
    commands = get_commands()
    for name in ("serve", "watch_routers", "add_router", "add_user"):
        assert commands[name] == "dashboard.routers", name


def test_the_migrations_match_the_models(db: Any) -> None:
    call_command("makemigrations", "dashboard", "--check", "--dry-run", verbosity=0)


def router_columns() -> set[str]:
    with connection.cursor() as cursor:
        return {
            c.name
            for c in connection.introspection.get_table_description(cursor, "dashboard_router")
        }


@pytest.mark.django_db(transaction=True)
def test_a_database_made_before_the_graph_field_migrates_forward() -> None:
    call_command("migrate", "dashboard", "0001", verbosity=0)
    assert "graph" not in router_columns()
    call_command("migrate", "dashboard", verbosity=0)
    assert "graph" in router_columns()
    assert Router.objects.create(name="after", base_url="http://127.0.0.1:1").graph is None


def test_the_demo_traffic_generator_runs_from_its_new_place() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gnurouter.bench.demo_traffic", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "router" in done.stdout
    assert "gnurouter.bench.demo_traffic" in (ROOT / "scripts" / "run").read_text()
