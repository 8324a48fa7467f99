"""The stage graph a router reports, as the dashboard keeps it and draws it.

Every router publishes what it is made of under "graph" in its metrics
snapshot (GET /metrics; gnurouter/graph.py builds it)::

    {"stages":  [{"name", "description", "stream", "classes", "express"}, ...],
     "sources": {name: description},      # where events come from outside the stages
     "edges":   [{"from", "to", "events": [...], "path": "enqueue" | "housekeeping"}, ...]}

The dashboard has no copy of its own: the poller keeps the latest graph each
router reported (`Router.graph`, `clean`ed), and the router page draws what
`for_page` makes of it.  A router too old to report a graph is drawn from the
stage names in its samples alone, without edges.
"""

from __future__ import annotations

from typing import Any

#: Bounds on what is kept of a reported graph: it comes from the network and is stored.
MAX_STAGES = 64
MAX_SOURCES = 64
MAX_EDGES = 512
MAX_EVENTS = 64
MAX_NAME = 64
MAX_TEXT = 300

#: "enqueue" edges may be refused by their target's admission policies; "housekeeping"
#: edges (lifecycle events, timers) never are.
ENQUEUE, HOUSEKEEPING = "enqueue", "housekeeping"


def _name(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= MAX_NAME:
        return value
    return None


def _text(value: Any) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _names(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [name for name in (_name(item) for item in value[:MAX_EVENTS]) if name is not None]


def clean(raw: Any) -> dict[str, Any] | None:
    """A reported graph in the shape above, keeping only well-formed parts; None if `raw`
    is no stage graph (missing, or without a single well-formed stage)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list):
        return None
    stages: list[dict[str, Any]] = []
    for item in raw["stages"][:MAX_STAGES]:
        name = _name(item.get("name")) if isinstance(item, dict) else None
        if name is None or any(stage["name"] == name for stage in stages):
            continue
        stages.append(
            {
                "name": name,
                "description": _text(item.get("description")),
                "stream": item.get("stream") is True,
                "classes": _names(item.get("classes")),
                "express": _names(item.get("express")),
            }
        )
    if not stages:
        return None
    stage_names = {stage["name"] for stage in stages}
    sources: dict[str, str] = {}
    raw_sources = raw.get("sources")
    if isinstance(raw_sources, dict):
        for key, description in list(raw_sources.items())[:MAX_SOURCES]:
            name = _name(key)
            if name is not None and name not in stage_names:
                sources[name] = _text(description)
    edges: list[dict[str, Any]] = []
    raw_edges = raw.get("edges")
    for item in raw_edges[:MAX_EDGES] if isinstance(raw_edges, list) else []:
        if not isinstance(item, dict):
            continue
        source, target = _name(item.get("from")), _name(item.get("to"))
        if source is None or target not in stage_names:
            continue
        if source not in stage_names and source not in sources:
            if len(sources) >= MAX_SOURCES:
                continue
            sources[source] = ""
        path = item.get("path")
        edges.append(
            {
                "from": source,
                "to": target,
                "events": _names(item.get("events")),
                "path": path if path in (ENQUEUE, HOUSEKEEPING) else ENQUEUE,
            }
        )
    return {"stages": stages, "sources": sources, "edges": edges}


def _merge(into: dict[str, Any], edge: dict[str, Any]) -> None:
    """Add one edge's events under its path ("enqueue" first, then "housekeeping")."""
    events = into["events"].setdefault(edge["path"], [])
    events.extend(event for event in edge["events"] if event not in events)
    into["paths"] = [path for path in (ENQUEUE, HOUSEKEEPING) if path in into["events"]]


def for_page(graph: dict[str, Any] | None, stage_names: list[str]) -> dict[str, Any]:
    """What the router page draws (`graph`: what `clean` kept, or None if the router never
    reported one; `stage_names`: the stages its samples carry).

    {"reported": bool,
     "stages": [{"name", "description", "stream", "classes", "express"}],
     "links":  [{"from", "to", "paths": [...], "events": {path: [...]}}],  # stage -> stage
     "inputs": {stage: [{"source", "description", "paths", "events": {path: [...]}}]}}

    Links merge the edges between two stages (one line per pair, whatever the paths);
    inputs are the outside sources (socket, timer, ...) that feed each stage.
    """
    stages: list[dict[str, Any]] = list(graph["stages"]) if graph else []
    known = {stage["name"] for stage in stages}
    for name in stage_names:  # a stage the samples show but the graph does not (or no graph)
        if name not in known:
            known.add(name)
            stages.append(
                {"name": name, "description": "", "stream": False, "classes": [], "express": []}
            )
    links: dict[tuple[str, str], dict[str, Any]] = {}
    inputs: dict[str, dict[str, dict[str, Any]]] = {}
    sources = graph["sources"] if graph else {}
    for edge in graph["edges"] if graph else []:
        if edge["from"] in known:
            link = links.setdefault(
                (edge["from"], edge["to"]), {"from": edge["from"], "to": edge["to"], "events": {}}
            )
            _merge(link, edge)
        else:
            feeds = inputs.setdefault(edge["to"], {})
            source = feeds.setdefault(
                edge["from"],
                {
                    "source": edge["from"],
                    "description": sources.get(edge["from"], ""),
                    "events": {},
                },
            )
            _merge(source, edge)
    return {
        "reported": graph is not None,
        "stages": stages,
        "links": list(links.values()),
        "inputs": {stage: list(feeds.values()) for stage, feeds in inputs.items()},
    }
