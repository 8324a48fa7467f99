"""The operator dashboard (Django + Channels): live stage queues, tuning, history.

    dashboard/project/   the Django project: settings, URLs, ASGI application
    dashboard/routers/   the app (label "dashboard"): models, views, live feeds, poller,
                         templates, static files, migrations, management commands

It talks to routers through their HTTP+JSON control endpoint
(`gnurouter run --control HOST:PORT`, see docs/architecture.md).
"""
