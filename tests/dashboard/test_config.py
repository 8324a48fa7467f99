"""Deployment settings from the environment: database, channel layer, secret key, DEBUG, hosts."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.project.config import (
    SettingsError,
    channel_layers,
    database_from_url,
    duration,
    positive_int,
    secret_key,
)
from tests.dashboard.conftest import ROOT


def test_sqlite_by_default_postgresql_from_database_url(tmp_path: Path) -> None:
    default = database_from_url(None, tmp_path / "db.sqlite3")
    assert default["ENGINE"] == "django.db.backends.sqlite3"
    assert default["NAME"] == str(tmp_path / "db.sqlite3")
    pg = database_from_url("postgresql://op:p%40ss@db.example:6543/dash?sslmode=require", tmp_path)
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "dash",
        "op",
        "p@ss",
        "db.example",
        "6543",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    assert database_from_url("postgres://postgres@127.0.0.1/test", tmp_path)["NAME"] == "test"
    assert database_from_url("sqlite:////srv/d.sqlite3", tmp_path)["NAME"] == "/srv/d.sqlite3"
    for bad in ("mysql://x/y", "postgresql://host:5432/", "sqlite:///"):
        with pytest.raises(SettingsError):
            database_from_url(bad, tmp_path)


def test_in_memory_channel_layer_by_default_redis_from_redis_url() -> None:
    assert channel_layers(None)["default"]["BACKEND"] == "channels.layers.InMemoryChannelLayer"
    redis = channel_layers("redis://127.0.0.1:6379/2")["default"]
    assert redis["BACKEND"] == "channels_redis.core.RedisChannelLayer"
    (host,) = redis["CONFIG"]["hosts"]
    assert host["address"] == "redis://127.0.0.1:6379/2"
    assert host["socket_timeout"] > 5  # longer than channels_redis' BRPOP wait
    with pytest.raises(SettingsError):
        channel_layers("http://127.0.0.1:6379")


def test_secret_key_is_generated_once_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret_key"
    first = secret_key(path)
    assert len(first) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key(path) == first  # kept across restarts
    other = secret_key(tmp_path / "elsewhere" / "secret_key")
    assert other != first  # generated, not a constant


def test_the_default_secret_key_file_is_kept_out_of_git() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "var/secret_key", "var/dashboard.sqlite3"],
        capture_output=True,
        cwd=ROOT,
    )
    assert ignored.returncode == 0 and len(ignored.stdout.splitlines()) == 2


def test_durations() -> None:
    assert duration("1h", name="x") == 3600
    assert duration("7d", name="x") == 7 * 86400
    assert duration("90", name="x") == 90
    with pytest.raises(SettingsError):
        duration("soon", name="x")


def test_positive_ints() -> None:
    assert positive_int("5", name="x") == 5
    for bad in ("0", "-1", "five", "2.5"):
        with pytest.raises(SettingsError):
            positive_int(bad, name="x")


def _settings_in_a_fresh_process(tmp_path: Path, **env: str) -> dict:
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        "print(json.dumps({'debug': settings.DEBUG, 'hosts': settings.ALLOWED_HOSTS, "
        "'key': settings.SECRET_KEY, 'engine': settings.DATABASES['default']['ENGINE'], "
        "'layer': settings.CHANNEL_LAYERS['default']['BACKEND'], "
        "'login_limit': settings.AXES_FAILURE_LIMIT, "
        "'login_cooloff': settings.AXES_COOLOFF_TIME.total_seconds()}))"
    )
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GNUROUTER_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    clean.update(
        DJANGO_SETTINGS_MODULE="dashboard.project.settings", GNUROUTER_VAR=str(tmp_path), **env
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def test_debug_is_off_and_hosts_are_loopback_unless_asked_for(tmp_path: Path) -> None:
    plain = _settings_in_a_fresh_process(tmp_path)
    assert plain["debug"] is False
    assert "*" not in plain["hosts"] and set(plain["hosts"]) <= {"127.0.0.1", "localhost", "[::1]"}
    assert plain["engine"].endswith("sqlite3")
    assert plain["layer"].endswith("InMemoryChannelLayer")
    assert plain["key"] == (tmp_path / "secret_key").read_text().strip()
    asked = _settings_in_a_fresh_process(
        tmp_path,
        GNUROUTER_DEBUG="1",
        GNUROUTER_ALLOWED_HOSTS="dash.example.org",
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/test",
        REDIS_URL="redis://127.0.0.1:6379/0",
    )
    assert asked["debug"] is True and asked["hosts"] == ["dash.example.org"]
    assert asked["engine"].endswith("postgresql")
    assert asked["layer"].endswith("RedisChannelLayer")
    assert asked["key"] == plain["key"]


def test_sign_in_lockout_defaults_and_environment(tmp_path: Path) -> None:
    plain = _settings_in_a_fresh_process(tmp_path)
    assert (plain["login_limit"], plain["login_cooloff"]) == (5, 15 * 60)
    asked = _settings_in_a_fresh_process(
        tmp_path, GNUROUTER_LOGIN_FAILURE_LIMIT="3", GNUROUTER_LOGIN_COOLOFF="1h"
    )
    assert (asked["login_limit"], asked["login_cooloff"]) == (3, 3600)
