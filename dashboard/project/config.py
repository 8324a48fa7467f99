"""Deployment settings read from the environment: database, channel layer, secret key, history.

Pure functions, so the settings module stays declarative and the rules are
tested on their own (tests/dashboard/test_config.py).
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit


class SettingsError(ValueError):
    """An environment variable holds something the dashboard cannot use."""


def database_from_url(url: str | None, sqlite_path: Path) -> dict[str, Any]:
    """Django's `DATABASES["default"]`: SQLite at `sqlite_path`, or what DATABASE_URL says.

    Understands postgres:// and postgresql:// (psycopg 3) and sqlite:///path.
    """
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(sqlite_path),
            # Several writers (poller, views) share one file: wait instead of failing.
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        name = unquote(parts.path.lstrip("/"))
        if not name:
            raise SettingsError("DATABASE_URL: the database name is missing")
        options = dict(parse_qsl(parts.query))
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": unquote(parts.hostname or ""),
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if parts.scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path, as elsewhere
        path = unquote(parts.path)[1:]
        if not path or path == "/":
            raise SettingsError("DATABASE_URL: sqlite:///PATH needs a file path")
        return database_from_url(None, Path(path))
    raise SettingsError(
        f"DATABASE_URL: unsupported scheme {parts.scheme!r} (use postgresql:// or sqlite:///)"
    )


def channel_layers(redis_url: str | None) -> dict[str, Any]:
    """In-memory (one process) by default; Redis when REDIS_URL is set (several workers)."""
    if not redis_url:
        return {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    if urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError("REDIS_URL: expected redis://HOST:PORT/DB")
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # channels_redis waits up to 5 s in BRPOP for a message, and redis-py (8)
                # gives up reading a socket after 5 s by default: a quiet channel (the
                # pollers' own) then failed every receive.  Read for longer than it waits.
                "hosts": [
                    {"address": redis_url, "socket_timeout": 15, "socket_connect_timeout": 5}
                ],
                "prefix": os.environ.get("GNUROUTER_CHANNEL_PREFIX", "gnurouter"),
                # Live samples are only worth anything fresh.
                "expiry": 10,
                "capacity": 200,
            },
        }
    }


def secret_key(path: Path) -> str:
    """The key in `path`, created (0600, never overwritten) on first use."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its key
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def duration(text: str, *, name: str) -> float:
    """'90s', '30m', '1h', '7d' or a number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise SettingsError(f"{name}: expected a duration like 30m, 1h or 7d, got {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def positive_int(text: str, *, name: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name}: expected a whole number, got {text!r}") from None
    if value < 1:
        raise SettingsError(f"{name}: must be at least 1, got {value}")
    return value


def env_list(value: str | None, default: list[str]) -> list[str]:
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")
