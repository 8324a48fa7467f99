"""The stage graph each router reports (GET /metrics "graph"): kept per router, drawn on its page.

The dashboard has no copy of its own: what it draws comes from the router, and a
router too old to report a graph is drawn from the stage names in its samples.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import Client

from dashboard.routers import stagegraph
from dashboard.routers.models import Router, Sample
from dashboard.routers.poller import Poller, Watch
from tests.dashboard.conftest import ROOT, RouterProcess

#: The shape of gnurouter.graph.describe(), cut down.
REPORTED: dict[str, Any] = {
    "stages": [
        {
            "name": "reader",
            "description": "socket bytes in",
            "stream": True,
            "classes": ["default"],
            "express": [],
        },
        {
            "name": "router",
            "description": "routing",
            "stream": False,
            "classes": ["control", "query"],
            "express": ["control"],
        },
        {"name": "connection", "description": "output", "stream": False, "classes": ["default"]},
    ],
    "sources": {"socket": "bytes and lifecycle", "timer": "periodic ticks"},
    "edges": [
        {"from": "reader", "to": "router", "events": ["MessageArrived"], "path": "enqueue"},
        {"from": "reader", "to": "router", "events": ["PeerLeft"], "path": "housekeeping"},
        {"from": "router", "to": "connection", "events": ["SendMessages"], "path": "enqueue"},
        {"from": "reader", "to": "connection", "events": ["ClosePeer"], "path": "housekeeping"},
        {"from": "socket", "to": "reader", "events": ["BytesReceived"], "path": "enqueue"},
        {"from": "socket", "to": "connection", "events": ["LinkWritable"], "path": "housekeeping"},
        {"from": "timer", "to": "router", "events": ["Tick"], "path": "housekeeping"},
    ],
}


def sample_data(*stages: str) -> dict[str, Any]:
    return {
        "r": {"peers": 0, "in": 0, "out": 0, "drop": 0},
        "s": {name: {"q": 0} for name in stages},
    }


def page_config(client: Client, router: Router) -> dict[str, Any]:
    page = client.get(f"/routers/{router.name}/").content.decode()
    found = re.search(r'<script id="page-config" type="application/json">(.*?)</script>', page)
    assert found, page
    return dict(json.loads(found.group(1)))


def test_a_reported_graph_is_kept_as_reported() -> None:
    graph = stagegraph.clean(REPORTED)
    assert graph is not None
    assert [stage["name"] for stage in graph["stages"]] == ["reader", "router", "connection"]
    assert graph["stages"][2]["express"] == []  # missing lists come back empty
    assert graph["sources"] == REPORTED["sources"]
    assert graph["edges"] == REPORTED["edges"]
    assert json.loads(json.dumps(graph)) == graph


@pytest.mark.parametrize(
    "raw",
    [None, {}, [], "graph", {"stages": []}, {"stages": [{"name": ""}, {"description": "x"}, 7]}],
)
def test_anything_else_is_no_graph(raw: Any) -> None:
    assert stagegraph.clean(raw) is None


def test_malformed_parts_are_dropped_and_sizes_bounded() -> None:
    raw = {
        "stages": [
            {"name": "a", "description": 5, "stream": "yes", "classes": "x"},
            {"name": "a"},  # a duplicate
            {"name": "b" * 500},
            {"name": "b", "classes": ["q", 3, None]},
        ],
        "sources": {"socket": "bytes", "": "nameless", "a": "a stage is no source"},
        "edges": [
            {"from": "a", "to": "b", "events": ["E"], "path": "teleport"},
            {"from": "a", "to": "nowhere", "events": []},
            {"from": "ghost", "to": "a", "events": "E"},
            "an edge",
        ]
        + [{"from": "a", "to": "b", "events": ["E"]}] * 2000,
    }
    graph = stagegraph.clean(raw)
    assert graph is not None
    assert graph["stages"] == [
        {"name": "a", "description": "", "stream": False, "classes": [], "express": []},
        {"name": "b", "description": "", "stream": False, "classes": ["q"], "express": []},
    ]
    assert graph["sources"] == {"socket": "bytes", "ghost": ""}
    assert graph["edges"][:2] == [
        {"from": "a", "to": "b", "events": ["E"], "path": "enqueue"},
        {"from": "ghost", "to": "a", "events": [], "path": "enqueue"},
    ]
    assert len(graph["edges"]) <= stagegraph.MAX_EDGES


def test_the_page_draws_one_link_per_pair_of_stages_and_the_outside_sources() -> None:
    page = stagegraph.for_page(stagegraph.clean(REPORTED), ["reader", "router", "connection"])
    assert page["reported"] is True
    assert [s["name"] for s in page["stages"]] == ["reader", "router", "connection"]
    assert page["links"] == [
        {
            "from": "reader",
            "to": "router",
            "events": {"enqueue": ["MessageArrived"], "housekeeping": ["PeerLeft"]},
            "paths": ["enqueue", "housekeeping"],
        },
        {
            "from": "router",
            "to": "connection",
            "events": {"enqueue": ["SendMessages"]},
            "paths": ["enqueue"],
        },
        {
            "from": "reader",
            "to": "connection",
            "events": {"housekeeping": ["ClosePeer"]},
            "paths": ["housekeeping"],
        },
    ]
    assert page["inputs"] == {
        "reader": [
            {
                "source": "socket",
                "description": "bytes and lifecycle",
                "events": {"enqueue": ["BytesReceived"]},
                "paths": ["enqueue"],
            }
        ],
        "connection": [
            {
                "source": "socket",
                "description": "bytes and lifecycle",
                "events": {"housekeeping": ["LinkWritable"]},
                "paths": ["housekeeping"],
            }
        ],
        "router": [
            {
                "source": "timer",
                "description": "periodic ticks",
                "events": {"housekeeping": ["Tick"]},
                "paths": ["housekeeping"],
            }
        ],
    }
    # A stage the samples carry but the graph does not name is drawn too, unlinked.
    skewed = stagegraph.for_page(stagegraph.clean(REPORTED), ["reader", "router", "extra"])
    assert [s["name"] for s in skewed["stages"]] == ["reader", "router", "connection", "extra"]


def test_a_router_that_never_reported_a_graph_is_drawn_from_its_stage_names() -> None:
    page = stagegraph.for_page(None, ["reader", "parser"])
    assert page["reported"] is False
    assert [s["name"] for s in page["stages"]] == ["reader", "parser"]
    assert page["links"] == [] and page["inputs"] == {}
    assert stagegraph.for_page(None, [])["stages"] == []


def test_the_router_page_draws_the_stored_graph(db: Any, viewer: Any) -> None:
    client = Client()
    client.force_login(viewer)
    reporting = Router.objects.create(
        name="new", base_url="http://127.0.0.1:1", graph=stagegraph.clean(REPORTED)
    )
    config = page_config(client, reporting)
    assert config["stages"] == ["reader", "router", "connection"]
    assert config["graph"] == stagegraph.for_page(stagegraph.clean(REPORTED), [])
    assert config["history"] == "/routers/new/history" and config["ws"] == "/ws/routers/new/"

    older = Router.objects.create(name="old", base_url="http://127.0.0.1:2")
    assert page_config(client, older)["stages"] == []  # never polled: nothing to draw yet
    Sample.objects.create(router=older, time="2026-01-01T00:00:00Z", data=sample_data("a", "b"))
    config = page_config(client, older)
    assert config["stages"] == ["a", "b"]
    assert config["graph"]["reported"] is False and config["graph"]["links"] == []


def test_the_poller_keeps_the_latest_reported_graph() -> None:
    watch = Watch(1, "r", "http://127.0.0.1:1", "")
    assert Poller._take_graph(watch, REPORTED) is True
    assert watch.graph == stagegraph.clean(REPORTED)
    assert Poller._take_graph(watch, json.loads(json.dumps(REPORTED))) is False  # unchanged
    assert Poller._take_graph(watch, None) is False  # an older router: the last one stays
    assert Poller._take_graph(watch, "garbage") is False
    assert watch.graph == stagegraph.clean(REPORTED)
    changed = {**REPORTED, "edges": REPORTED["edges"][:1]}
    assert Poller._take_graph(watch, changed) is True
    assert watch.graph is not None and len(watch.graph["edges"]) == 1


@pytest.mark.network
@pytest.mark.django_db(transaction=True)
def test_a_router_reports_its_graph_and_its_page_draws_it(
    shared_router: RouterProcess, viewer: Any
) -> None:
    reported = httpx.get(
        shared_router.base_url + "/metrics",
        headers={"Authorization": f"Bearer {shared_router.token}"},
        timeout=5,
    ).json()["graph"]
    router = Router.objects.create(
        name="graph-1", base_url=shared_router.base_url, token=shared_router.token
    )

    async def poll_twice() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        class Layer:
            async def group_send(self, group: str, message: dict[str, Any]) -> None:
                sent.append(message)

        poller = Poller(interval=0.25, timeout=2.0, layer=Layer())
        watch = Watch(router.pk, router.name, router.base_url, router.token)
        assert await poller.poll(watch)
        assert await poller.poll(watch)
        await poller.close()
        return [m["payload"] for m in sent if m["type"] == "router.sample"]

    first, second = async_to_sync(poll_twice)()
    router.refresh_from_db()
    assert router.graph == stagegraph.clean(reported) is not None
    # The page gets the graph with the first sample (then with the details, once a second).
    assert first["graph"] == stagegraph.for_page(router.graph, list(first["stages"]))
    assert second.get("graph", first["graph"]) == first["graph"]
    # Every stage the router reports metrics for is in its graph, and every link is drawn.
    assert {s["name"] for s in first["graph"]["stages"]} == set(first["stages"])
    pairs = {(e["from"], e["to"]) for e in reported["edges"] if e["from"] in first["stages"]}
    assert {(link["from"], link["to"]) for link in first["graph"]["links"]} == pairs
    assert first["graph"]["inputs"]  # sockets, timers, ... feed some stages

    client = Client()
    client.force_login(viewer)
    config = page_config(client, router)
    assert config["graph"] == first["graph"]
    assert config["stages"] == [s["name"] for s in reported["stages"]]


def test_the_dashboard_never_imports_the_routers_graph_module() -> None:
    sources = (ROOT / "dashboard").rglob("*.py")
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources
        if re.search(r"^\s*(from|import)\s+gnurouter\.graph\b", Path(path).read_text(), re.M)
    ]
    assert offenders == []
