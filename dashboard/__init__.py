"""The operator dashboard (Django + Channels): live stage queues, tuning, history.

It talks to routers through their HTTP+JSON control endpoint
(`gnurouter run --control HOST:PORT`, see docs/architecture.md).
"""
