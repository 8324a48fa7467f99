"""The dashboard's pages cost the same after days of history as after minutes.

A day of history at every tier for 30 routers (626,400 rows, seeded as
the poller and downsampling would leave it), then every SQL statement the
pages run is EXPLAINed on PostgreSQL: none may scan the samples table
sequentially or through a bitmap (both read rows in proportion to the
history), and every read of it must go through the (router, resolution, time)
index with the tier named, so that it reads the rows it needs and no others.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from dashboard.routers.models import Router, Sample
from dashboard.routers.seeding import seed_history
from tests.dashboard.conftest import require_postgresql

ROUTERS = 30
DAY = 86400.0
TABLE = "dashboard_sample"
GROWING_SCANS = {"Seq Scan", "Bitmap Heap Scan"}


@pytest.fixture
def fleet(db: Any) -> list[Router]:
    require_postgresql()
    routers = Router.objects.bulk_create(
        Router(name=f"fleet-{i:02d}", base_url="http://127.0.0.1:1") for i in range(ROUTERS)
    )
    made = seed_history(
        [r.pk for r in routers],
        datetime.now(tz=UTC),
        poll_interval=0.25,
        raw=3600,
        medium=DAY - 6 * 3600,
        retention=DAY,
    )
    # every poll of the last hour, 10-second rows to 18 h, one-minute rows to 24 h
    assert made == ROUTERS * (4 * 3600 + 17 * 360 + 6 * 60)
    return routers


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def explain(sql: str) -> list[dict[str, Any]]:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        raw = cursor.fetchone()[0]
    (plan,) = raw if isinstance(raw, list) else json.loads(raw)
    return [node for node in plan_nodes(plan["Plan"]) if node.get("Relation Name") == TABLE]


def growing(nodes: list[dict[str, Any]]) -> list[str]:
    """What in these scans reads in proportion to the history rather than to the answer."""
    problems = [node["Node Type"] for node in nodes if node["Node Type"] in GROWING_SCANS]
    problems += [
        f"{node['Node Type']} without the tier: {node.get('Index Cond')}"
        for node in nodes
        if node["Node Type"] not in GROWING_SCANS and "resolution" not in node.get("Index Cond", "")
    ]
    return problems


def test_no_page_scans_history_in_proportion_to_its_length(
    fleet: list[Router], viewer: Any
) -> None:
    client = Client()
    client.force_login(viewer)
    now = datetime.now(tz=UTC).timestamp()
    name = fleet[7].name
    pages = [
        reverse("dashboard:overview"),
        reverse("dashboard:router", args=[name]),
        reverse("dashboard:router-history", args=[name]),  # the live window
        reverse("dashboard:router-history", args=[name]) + f"?start={now - 900}&end={now}",
        reverse("dashboard:pollers"),
    ]
    checked: dict[str, list[str]] = {}
    for page in pages:
        with CaptureQueriesContext(connection) as queries:
            response = client.get(page)
        assert response.status_code == 200, page
        statements = [q["sql"] for q in queries.captured_queries if TABLE in q["sql"]]
        for sql in statements:
            nodes = explain(sql)
            assert nodes, sql
            checked[sql] = growing(nodes)
        if page != reverse("dashboard:pollers"):
            assert statements, f"{page} read no history at all"
    assert len(checked) >= 5
    assert {sql: problems for sql, problems in checked.items() if problems} == {}
    # The check itself catches the query the overview used to run for each router (the
    # newest row of any tier): PostgreSQL reads every row of the router to answer it.
    newest_any_tier = Sample.objects.filter(router=fleet[3]).order_by("-time").values("data")[:1]
    assert growing(explain(str(newest_any_tier.query)))


def test_the_pages_show_the_seeded_history(fleet: list[Router], viewer: Any) -> None:
    client = Client()
    client.force_login(viewer)
    overview = client.get(reverse("dashboard:overview"))
    assert all(router.name in overview.content.decode() for router in fleet)
    newest = Sample.objects.filter(router=fleet[0], resolution=0).latest("time").time.timestamp()
    url = reverse("dashboard:router-history", args=[fleet[0].name])
    recent = client.get(url, {"start": newest - 300, "end": newest}).json()
    assert len(recent["t"]) == 300 / 0.25 + 1  # every poll of the last 5 minutes, both ends
    assert recent["oldest"] == pytest.approx(newest - DAY, abs=60)
    whole = client.get(url, {"start": newest - DAY, "end": newest, "points": 500}).json()
    assert 0 < len(whole["t"]) <= 500 + 2 and whole["t"] == sorted(whole["t"])
    config = client.get(reverse("dashboard:router", args=[fleet[0].name]))
    assert b"catcher" in config.content  # stage names from the newest sample
