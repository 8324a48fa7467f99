"""Settings of the dashboard's Django project; every deployment-specific value comes from the
environment (the rules are in dashboard.project.config).

GNUROUTER_SECRET_KEY        the secret key; by default one is generated on first run into
                            var/secret_key (0600, git-ignored) and kept
GNUROUTER_DEBUG=1           Django's DEBUG (off unless asked for)
GNUROUTER_ALLOWED_HOSTS     comma-separated host names (default: loopback names only)
GNUROUTER_CSRF_TRUSTED_ORIGINS  e.g. https://dash.example.org (behind a TLS proxy)
GNUROUTER_HTTPS=1           secure cookies, HSTS, trust X-Forwarded-Proto from the proxy
GNUROUTER_VAR               where the SQLite file and the secret key live (default ./var)
DATABASE_URL                postgresql://user:pass@host:5432/db (psycopg 3); default SQLite
REDIS_URL                   redis://host:6379/0 for the channel layer; default in-memory
GNUROUTER_POLL_INTERVAL     seconds between metrics polls of one router (0.25)
GNUROUTER_POLLER_LEASE      a poller that stops renewing its lease this long is taken for
                            dead and its routers go to the others (3s; renewed every third)
GNUROUTER_HISTORY_RAW       full-resolution history kept this long (1h)
GNUROUTER_HISTORY_MEDIUM    10-second history kept this long (1d)
GNUROUTER_HISTORY_RETENTION one-minute history kept this long (30d)
GNUROUTER_LOGIN_FAILURE_LIMIT  failed sign-ins (per user name and client address) before
                            that pair is locked out (5)
GNUROUTER_LOGIN_COOLOFF     how long a lockout lasts (15m)
"""

import os
from datetime import timedelta
from pathlib import Path

from dashboard.project import config

#: The checkout this settings module is in (dashboard/project/settings.py).
BASE_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = Path(os.environ.get("GNUROUTER_VAR", str(BASE_DIR / "var")))

SECRET_KEY = os.environ.get("GNUROUTER_SECRET_KEY") or config.secret_key(VAR_DIR / "secret_key")
DEBUG = config.env_flag(os.environ.get("GNUROUTER_DEBUG"))
ALLOWED_HOSTS = config.env_list(
    os.environ.get("GNUROUTER_ALLOWED_HOSTS"), ["127.0.0.1", "localhost", "[::1]"]
)
CSRF_TRUSTED_ORIGINS = config.env_list(os.environ.get("GNUROUTER_CSRF_TRUSTED_ORIGINS"), [])

# Not "daphne": its app config installs Twisted's asyncio reactor at import time, which
# would clash with the router tests' reactor; `manage.py serve` starts daphne itself.
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    # The app: routers, their history, tuning and the audit log (app label "dashboard").
    "dashboard.routers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "dashboard.project.middleware.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a locked-out sign-in into AXES_LOCKOUT_CALLABLE's page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "dashboard.project.urls"
ASGI_APPLICATION = "dashboard.project.asgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": config.database_from_url(
        os.environ.get("DATABASE_URL"),
        Path(os.environ.get("GNUROUTER_DB", str(VAR_DIR / "dashboard.sqlite3"))),
    )
}
CHANNEL_LAYERS = config.channel_layers(os.environ.get("REDIS_URL"))

# Authentication: everything but the login page needs a signed-in user.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:overview"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_AGE = 12 * 3600
CSRF_COOKIE_HTTPONLY = True  # pages carry the token in the form; scripts read it from there
CSRF_COOKIE_SAMESITE = "Strict"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if config.env_flag(os.environ.get("GNUROUTER_HTTPS")):
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = 3600

# Sign-in rate limit (django-axes, attempts kept in the database so every daphne worker
# sees them): after GNUROUTER_LOGIN_FAILURE_LIMIT failures for one user name from one
# client address, that pair is refused for GNUROUTER_LOGIN_COOLOFF, whatever the
# password; the same user signing in from elsewhere is not affected.  A success resets
# the count.  Unlock early with `manage.py axes_reset_username NAME` or in the admin.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair outright
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = config.positive_int(
    os.environ.get("GNUROUTER_LOGIN_FAILURE_LIMIT", "5"), name="GNUROUTER_LOGIN_FAILURE_LIMIT"
)
AXES_COOLOFF_TIME = timedelta(
    seconds=config.duration(
        os.environ.get("GNUROUTER_LOGIN_COOLOFF", "15m"), name="GNUROUTER_LOGIN_COOLOFF"
    )
)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "dashboard.routers.views.locked_out"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"

# The poller and the history it keeps.
POLL_INTERVAL = float(os.environ.get("GNUROUTER_POLL_INTERVAL", "0.25"))
POLL_TIMEOUT = float(os.environ.get("GNUROUTER_POLL_TIMEOUT", "1.0"))
# Pollers share the routers through leases (dashboard.routers.sharing).
POLLER_LEASE_TTL = config.duration(
    os.environ.get("GNUROUTER_POLLER_LEASE", "3s"), name="GNUROUTER_POLLER_LEASE"
)
POLLER_LEASE_RENEW = POLLER_LEASE_TTL / 3
HISTORY_RAW = config.duration(
    os.environ.get("GNUROUTER_HISTORY_RAW", "1h"), name="GNUROUTER_HISTORY_RAW"
)
HISTORY_MEDIUM = config.duration(
    os.environ.get("GNUROUTER_HISTORY_MEDIUM", "1d"), name="GNUROUTER_HISTORY_MEDIUM"
)
HISTORY_RETENTION = config.duration(
    os.environ.get("GNUROUTER_HISTORY_RETENTION", "30d"), name="GNUROUTER_HISTORY_RETENTION"
)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "dashboard": {"handlers": ["console"], "level": "INFO"},
        "django": {"handlers": ["console"], "level": "WARNING"},
        "axes": {"handlers": ["console"], "level": "WARNING"},
    },
}
