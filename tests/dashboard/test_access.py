"""Who may see and tune what: anonymous, signed in without a role, viewer, tuner; CSRF; audit.

Every test talks to a real router process through its token-protected control endpoint.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client

from dashboard.routers.models import AuditEntry, Router
from tests.dashboard.conftest import RouterProcess

pytestmark = pytest.mark.network


@pytest.fixture
def router(db: Any, shared_router: RouterProcess) -> Router:
    return Router.objects.create(
        name="edge-1", base_url=shared_router.base_url, token=shared_router.token
    )


def pages(router: Router) -> list[str]:
    return ["/", f"/routers/{router.name}/", f"/routers/{router.name}/history", "/audit/"]


def tune(client: Client, router: Router, **fields: Any) -> Any:
    return client.post(
        f"/routers/{router.name}/tune", fields, headers={"accept": "application/json"}
    )


def test_anonymous_users_are_sent_to_sign_in_and_cannot_tune(
    router: Router, shared_router: RouterProcess
) -> None:
    client = Client()
    for url in pages(router):
        response = client.get(url)
        assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    before = shared_router.value("router.max_ttl")
    response = tune(client, router, parameter="router.max_ttl", value=before - 1)
    assert response.status_code == 302
    assert shared_router.value("router.max_ttl") == before
    assert not AuditEntry.objects.exists()
    assert client.get("/accounts/login/").status_code == 200


def test_signed_in_without_a_role_sees_nothing(router: Router, outsider: Any) -> None:
    client = Client()
    client.force_login(outsider)
    for url in pages(router):
        assert client.get(url).status_code == 403


def test_viewer_sees_every_parameter_read_only_and_cannot_tune(
    router: Router, viewer: Any, shared_router: RouterProcess
) -> None:
    client = Client()
    client.force_login(viewer)
    overview = client.get("/")
    assert overview.status_code == 200 and b"edge-1" in overview.content
    page = client.get(f"/routers/{router.name}/").content.decode()
    for name in shared_router.parameters():
        assert f'data-live-param="{name}"' in page
    assert 'class="tune"' not in page and "Read-only" in page
    before = shared_router.value("catcher.target_peers")
    response = tune(client, router, parameter="catcher.target_peers", value=before + 1)
    assert response.status_code == 403
    assert shared_router.value("catcher.target_peers") == before
    assert not AuditEntry.objects.exists()


def test_tuner_gets_a_form_for_every_parameter_the_router_exposes(
    router: Router, tuner: Any, shared_router: RouterProcess
) -> None:
    client = Client()
    client.force_login(tuner)
    page = client.get(f"/routers/{router.name}/").content.decode()
    described = shared_router.parameters()
    forms = re.findall(r'<form class="tune"[^>]*data-parameter="([^"]+)"', page)
    assert sorted(forms) == sorted(described)
    # Each form knows the parameter's range the way the router states it.
    for name, description in described.items():
        assert f"allowed: {description['allowed']}" in page, name


def test_a_tuner_change_reaches_the_router_and_is_audited(
    router: Router, tuner: Any, shared_router: RouterProcess
) -> None:
    client = Client()
    client.force_login(tuner)
    before = shared_router.value("stage.router.threshold")
    new = 321 if before != 321 else 322
    response = tune(client, router, parameter="stage.router.threshold", value=new)
    assert response.status_code == 200, response.content
    assert response.json()["ok"] and response.json()["new"] == new
    assert shared_router.value("stage.router.threshold") == new
    entry = AuditEntry.objects.get()
    assert (entry.username, entry.router_name, entry.parameter) == (
        "tom",
        "edge-1",
        "stage.router.threshold",
    )
    assert (entry.old, entry.new, entry.accepted) == (before, new, True)
    audit_page = client.get("/audit/").content.decode()
    assert "stage.router.threshold" in audit_page and f"{before} → {new}" in audit_page
    # Unbounded, through the nullable checkbox.
    response = tune(client, router, parameter="stage.router.threshold", unbounded="on", value="")
    assert response.status_code == 200 and shared_router.value("stage.router.threshold") is None
    # A duration in the operator's words, and a choice.
    assert tune(client, router, parameter="router.query_delay", value="3ms").status_code == 200
    assert shared_router.value("router.query_delay") == pytest.approx(0.003)
    assert tune(client, router, parameter="router.query_delay", value="0ms").status_code == 200
    mode = "flood" if shared_router.value("router.ping_mode") == "cache" else "cache"
    assert tune(client, router, parameter="router.ping_mode", value=mode).status_code == 200
    assert shared_router.value("router.ping_mode") == mode
    # Without JavaScript: a plain form post redirects back with a message.
    plain = client.post(
        f"/routers/{router.name}/tune", {"parameter": "router.max_ttl", "value": "6"}, follow=True
    )
    assert plain.redirect_chain[-1][0] == f"/routers/{router.name}/"
    assert shared_router.value("router.max_ttl") == 6
    assert "router.max_ttl" in plain.content.decode()


@pytest.mark.parametrize(
    ("parameter", "value", "allowed"),
    [
        ("stage.router.threshold", "0", "allowed: int from 1 to 10000000 or null (unbounded)"),
        ("stage.router.threshold", "12.5", "allowed: int from 1 to 10000000 or null (unbounded)"),
        ("router.max_ttl", "99", "allowed: int from 1 to 15"),
        ("router.query_delay", "soon", "allowed: a duration from 0.0s to 10.0s"),
        ("router.query_delay", "11s", "allowed: a duration from 0.0s to 10.0s"),
        ("router.ping_mode", "broadcast", "allowed: one of cache, flood"),
    ],
)
def test_invalid_values_are_refused_with_the_range_and_nothing_changes(
    router: Router,
    tuner: Any,
    shared_router: RouterProcess,
    parameter: str,
    value: str,
    allowed: str,
) -> None:
    client = Client()
    client.force_login(tuner)
    before = {name: d["value"] for name, d in shared_router.parameters().items()}
    response = tune(client, router, parameter=parameter, value=value)
    assert response.status_code == 400
    assert allowed in response.json()["message"]
    after = {name: d["value"] for name, d in shared_router.parameters().items()}
    assert after == before
    entry = AuditEntry.objects.get()
    assert entry.accepted is False and entry.parameter == parameter and allowed in entry.error


def test_unknown_parameter_is_refused(router: Router, tuner: Any) -> None:
    client = Client()
    client.force_login(tuner)
    response = tune(client, router, parameter="no.such.thing", value="1")
    assert response.status_code == 400 and "unknown parameter" in response.json()["message"]


def test_forged_or_missing_csrf_token_is_refused(
    router: Router, tuner: Any, shared_router: RouterProcess
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(tuner)
    before = shared_router.value("router.pongs_per_ping")
    new = before + 1
    fields = {"parameter": "router.pongs_per_ping", "value": str(new)}
    assert client.post(f"/routers/{router.name}/tune", fields).status_code == 403
    forged = dict(fields, csrfmiddlewaretoken="A" * 64)
    assert client.post(f"/routers/{router.name}/tune", forged).status_code == 403
    assert (
        client.post(
            f"/routers/{router.name}/tune", fields, headers={"x-csrftoken": "B" * 64}
        ).status_code
        == 403
    )
    assert shared_router.value("router.pongs_per_ping") == before
    # The page's own token works: the check is real, not a blanket refusal.
    page = client.get(f"/routers/{router.name}/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    ok = client.post(
        f"/routers/{router.name}/tune",
        dict(fields, csrfmiddlewaretoken=token.group(1)),
        headers={"accept": "application/json"},
    )
    assert ok.status_code == 200
    assert shared_router.value("router.pongs_per_ping") == new


def test_sign_in_itself_needs_the_csrf_token(tuner: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    credentials = {"username": "tom", "password": "pw-tom-0123456789"}
    assert client.post("/accounts/login/", credentials).status_code == 403
    page = client.get("/accounts/login/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert token is not None
    signed_in = client.post("/accounts/login/", dict(credentials, csrfmiddlewaretoken=token[1]))
    assert signed_in.status_code == 302 and client.get("/").status_code == 200


def test_pages_carry_a_strict_content_security_policy(router: Router, viewer: Any) -> None:
    client = Client()
    client.force_login(viewer)
    response = client.get(f"/routers/{router.name}/")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in response.content.decode()  # no inline script to allow


def test_a_router_that_is_down_leaves_the_page_usable(db: Any, tuner: Any) -> None:
    from tests.dashboard.conftest import free_port

    gone = Router.objects.create(name="gone", base_url=f"http://127.0.0.1:{free_port()}")
    client = Client()
    client.force_login(tuner)
    page = client.get(f"/routers/{gone.name}/")
    assert page.status_code == 200 and "Parameters unavailable" in page.content.decode()
    response = tune(client, gone, parameter="router.max_ttl", value="5")
    assert response.status_code == 503 and "unreachable" in response.json()["message"]
