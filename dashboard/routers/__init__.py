"""The dashboard app (label "dashboard"): the routers it watches, their history, tuning, audit.

models.py        Router (with the stage graph it last reported), Sample, AuditEntry
poller.py        polls every router's GET /metrics, feeds the live views, stores history
history.py       compact samples, downsampling tiers, reading a range back
stagegraph.py    the stage graph a router reports, as drawn on its page
views.py         pages and JSON endpoints (urls.py, namespace "dashboard")
consumers.py     the WebSocket live feeds (routing.py)
forms.py         tuning forms built from GET /parameters
routerclient.py  the router's control endpoint, with its token
roles.py         the viewer and tuner groups
management/      serve, watch_routers, add_router, add_user
"""
