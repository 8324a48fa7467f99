"""The dashboard's Django project: settings, URLs and the ASGI application daphne serves.

settings.py    everything deployment-specific comes from the environment (config.py)
urls.py        sign-in, admin, and the dashboard app (dashboard.routers) at the root
asgi.py        HTTP (Django) and WebSockets (the app's live feeds) for daphne
middleware.py  the Content-Security-Policy every page but the admin's carries
"""
