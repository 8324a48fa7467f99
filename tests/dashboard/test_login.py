"""Sign-in rate limit (django-axes): repeated bad passwords lock one user name out from
one client address for the cool-off period, while the same user signs in from elsewhere.

Through Django's test client, and through real daphne (where Django runs axes'
middleware on its async path) from two loopback addresses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client

from tests.dashboard.conftest import dashboard_env, served_dashboard

PASSWORD = "pw-vera-0123456789"  # the viewer fixture's


def sign_in(client: Client, username: str, password: str) -> Any:
    return client.post("/accounts/login/", {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_repeated_bad_passwords_lock_out_that_user_from_that_address(
    viewer: Any, settings: Any
) -> None:
    from axes.models import AccessAttempt

    limit = settings.AXES_FAILURE_LIMIT
    assert limit >= 2
    attacker = Client(REMOTE_ADDR="203.0.113.9")
    for _ in range(limit - 1):
        refused = sign_in(attacker, "vera", "not-the-password")
        assert refused.status_code == 200 and b"didn't match" in refused.content
    locked = sign_in(attacker, "vera", "not-the-password")
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content
    assert b"15 minutes" in locked.content and locked["Retry-After"] == "900"

    # Now even the right password is refused from there, and nothing is signed in.
    locked = sign_in(attacker, "vera", PASSWORD)
    assert locked.status_code == 429 and not signed_in(attacker)
    assert attacker.get("/").status_code == 302

    # A fresh client (another address) signs in with the right password.
    fresh = Client(REMOTE_ADDR="198.51.100.7")
    welcome = sign_in(fresh, "vera", PASSWORD)
    assert welcome.status_code == 302 and welcome.url == "/"
    assert signed_in(fresh) and fresh.get("/").status_code == 200

    # Once the cool-off has passed, the locked-out address may sign in again.
    for attempt in AccessAttempt.objects.all():
        attempt.attempt_time -= settings.AXES_COOLOFF_TIME
        attempt.save()
    welcome = sign_in(attacker, "vera", PASSWORD)
    assert welcome.status_code == 302 and signed_in(attacker)


def test_a_successful_sign_in_resets_the_count(viewer: Any, settings: Any) -> None:
    client = Client(REMOTE_ADDR="192.0.2.44")
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "vera", "typo").status_code == 200
    assert sign_in(client, "vera", PASSWORD).status_code == 302
    client.logout()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "vera", "typo").status_code == 200
    assert sign_in(client, "vera", PASSWORD).status_code == 302


@pytest.mark.network
def test_lockout_under_daphne(tmp_path: Path) -> None:
    env = dashboard_env(tmp_path / "var", GNUROUTER_LOGIN_FAILURE_LIMIT="3")
    with served_dashboard(env, "--no-poller") as served:

        def client_from(address: str) -> httpx.Client:
            transport = httpx.HTTPTransport(local_address=address)
            return httpx.Client(base_url=served["url"], transport=transport, timeout=10)

        def sign_in(client: httpx.Client, password: str) -> httpx.Response:
            form = client.get("/accounts/login/")
            assert form.status_code == 200
            token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
            assert token is not None
            return client.post(
                "/accounts/login/",
                data={
                    "csrfmiddlewaretoken": token.group(1),
                    "username": "admin",
                    "password": password,
                },
            )

        with client_from("127.0.0.2") as attacker, client_from("127.0.0.3") as fresh:
            for _ in range(2):
                assert sign_in(attacker, "guess").status_code == 200
            locked = sign_in(attacker, "guess")
            assert locked.status_code == 429 and "Too many failed sign-ins" in locked.text
            assert sign_in(attacker, served["password"]).status_code == 429
            assert attacker.get("/").status_code == 302  # still not signed in

            welcome = sign_in(fresh, served["password"])
            assert welcome.status_code == 302 and welcome.headers["location"] == "/"
            assert fresh.get("/").status_code == 200
