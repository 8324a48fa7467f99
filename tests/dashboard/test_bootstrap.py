"""The first run's administrator: a password printed last at start-up, in a box after the
URL, and kept in var/admin_password (mode 600) until the administrator first signs in."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client

from dashboard.routers.bootstrap import ensure_admin, password_file, unused_admin_password
from tests.dashboard.conftest import dashboard_env, served_dashboard


@pytest.fixture
def var(settings: Any, tmp_path: Path) -> Path:
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_password_file_is_private_and_goes_at_the_first_sign_in(db: Any, var: Path) -> None:
    password = ensure_admin()
    assert password is not None
    path = var / "admin_password"
    assert path == password_file()
    assert path.read_text() == password + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert unused_admin_password() == password
    client = Client()
    signed_in = client.post("/accounts/login/", {"username": "admin", "password": password})
    assert signed_in.status_code == 302
    assert not path.exists() and unused_admin_password() is None


def test_a_stale_password_file_is_not_shown(db: Any, var: Path, django_user_model: Any) -> None:
    ensure_admin()
    admin = django_user_model.objects.get(username="admin")
    admin.set_password("changed-by-manage-py-changepassword")
    admin.save()
    assert password_file().exists() and unused_admin_password() is None


def test_another_users_sign_in_keeps_the_file(db: Any, var: Path, django_user_model: Any) -> None:
    ensure_admin()
    django_user_model.objects.create_user("alice", password="alice-password-123")
    client = Client()
    signed_in = client.post(
        "/accounts/login/", {"username": "alice", "password": "alice-password-123"}
    )
    assert signed_in.status_code == 302 and "_auth_user_id" in client.session
    assert password_file().exists()


def _start_up_output(served: dict[str, Any]) -> list[str]:
    output = served["output"]
    # The box's closing rule is the last line of start-up.
    box = output.wait_for(r"^\| Dashboard administrator: ")
    assert box is not None
    return list(output.lines)


@pytest.mark.network
def test_serve_prints_the_password_in_a_box_after_the_url_until_first_sign_in(
    tmp_path: Path,
) -> None:
    env = dashboard_env(tmp_path / "var", GNUROUTER_CONTROL_TOKEN="t" * 32)
    # scripts/run's one Django process: migrate, add the router, serve.
    with served_dashboard(env, "--router", "local=http://127.0.0.1:6347") as served:
        lines = _start_up_output(served)
        url_line = next(i for i, line in enumerate(lines) if line.startswith("dashboard: http"))
        box_line = next(i for i, line in enumerate(lines) if "Dashboard administrator" in line)
        assert url_line < box_line
        assert lines[box_line - 1].startswith("+--") and lines[box_line - 1].endswith("-+")
        assert f"| Sign in at {served['url']}" in lines[box_line + 1]
        assert (tmp_path / "var" / "admin_password").read_text().strip() == served["password"]
    # Not signed in yet: the next start shows the same password again.
    with served_dashboard(env) as again:
        assert again["password"] == served["password"]
        with httpx.Client(base_url=again["url"], follow_redirects=True, timeout=10) as browser:
            browser.get("/accounts/login/")
            response = browser.post(
                "/accounts/login/",
                data={
                    "username": "admin",
                    "password": again["password"],
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
                headers={"Referer": again["url"] + "accounts/login/"},
            )
            assert response.status_code == 200 and "/accounts/login/" not in str(response.url)
    assert not (tmp_path / "var" / "admin_password").exists()
    with sqlite3.connect(tmp_path / "var" / "dashboard.sqlite3") as database:
        routers = database.execute("SELECT name, base_url, token FROM dashboard_router").fetchall()
    assert routers == [("local", "http://127.0.0.1:6347", "t" * 32)]
