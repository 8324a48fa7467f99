"""What the dashboard keeps: the routers it watches, their history, and the audit log."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.validators import URLValidator
from django.db import models

from dashboard.routers.packing import PackedSampleField


class Router(models.Model):
    """A router's control endpoint (`gnurouter run --control HOST:PORT --control-token ...`)."""

    name = models.SlugField(max_length=64, unique=True)
    base_url = models.CharField(
        "control URL",
        max_length=200,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="e.g. http://127.0.0.1:6347",
    )
    token = models.CharField(
        max_length=256,
        blank=True,
        help_text="the router's control token (sent as a Bearer token)",
    )
    enabled = models.BooleanField(default=True, help_text="poll this router")
    # Kept up to date by the poller, for pages rendered before the live feed starts.
    up = models.BooleanField(default=False, editable=False)
    last_seen = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.CharField(max_length=300, blank=True, editable=False)
    listen = models.CharField(max_length=100, blank=True, editable=False)
    # The stage graph the router last reported in its metrics (dashboard.routers.stagegraph);
    # null while it never has (not polled yet, or a router too old to report one).
    graph = models.JSONField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        permissions = [("tune_router", "Can change a router's parameters")]

    def __str__(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        """The channel-layer group live samples of this router go to."""
        return f"router.{self.pk}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


#: Resolutions of the stored history, in seconds (0 = every poll).
RAW, MEDIUM, COARSE = 0, 10, 60
TIERS = (RAW, MEDIUM, COARSE)


class Sample(models.Model):
    """One poll (resolution 0) or an aggregate of `count` polls over `resolution` seconds.

    `data` is compact: {"r": {peers, in, out, drop}, "s": {stage: {q, qmax, thr, in, out,
    drop, p50, p99, act}}}; see dashboard.routers.history.  It is stored packed
    (dashboard.routers.packing), a few hundred bytes a row.  Every read goes through the
    (router, resolution, time) index, which also serves the foreign key (so that has none
    of its own).
    """

    router = models.ForeignKey(
        Router, on_delete=models.CASCADE, related_name="samples", db_index=False
    )
    time = models.DateTimeField()
    resolution = models.PositiveIntegerField(default=RAW)
    count = models.PositiveIntegerField(default=1)
    data = PackedSampleField()

    class Meta:
        ordering = ["time"]
        indexes = [models.Index(fields=["router", "resolution", "time"])]

    def __str__(self) -> str:
        return f"{self.router_id}@{self.time.isoformat()}/{self.resolution}s"


class AuditEntry(models.Model):
    """A tuning request: who, when, which router and parameter, old -> new, and the outcome."""

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    username = models.CharField(max_length=150)  # kept when the account is deleted
    router = models.ForeignKey(Router, null=True, on_delete=models.SET_NULL, related_name="audit")
    router_name = models.CharField(max_length=64)
    parameter = models.CharField(max_length=200)
    old = models.JSONField(null=True)
    new = models.JSONField(null=True)
    accepted = models.BooleanField()
    error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username} {self.router_name} {self.parameter}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "user": self.username,
            "router": self.router_name,
            "parameter": self.parameter,
            "old": self.old,
            "new": self.new,
            "accepted": self.accepted,
            "error": self.error,
        }


class PollerLease(models.Model):
    """A running poller (`watch_routers`, or the one inside `serve`), alive while `expires`
    is in the future; it renews its row every few seconds with what it is doing.

    Live pollers split the enabled routers between them by rendezvous hashing over their
    names (dashboard.routers.sharing); a poller that dies stops renewing, and once its
    row expires the others take its routers.  Times are the database's clock, so pollers
    on machines whose clocks disagree still agree on who is alive.
    """

    name = models.CharField(max_length=200, unique=True)
    host = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(default=0)
    started = models.DateTimeField()
    renewed = models.DateTimeField()
    expires = models.DateTimeField(db_index=True)
    #: The routers (ids) it polls, as of its last renewal.
    routers = models.JSONField(default=list)
    polls_per_s = models.FloatField(default=0.0)
    #: How late polls started against their schedule over the last renewal period, ms.
    lag_p50_ms = models.FloatField(default=0.0)
    lag_p99_ms = models.FloatField(default=0.0)
    #: Process CPU time per poll over the last renewal period (everything it does), ms.
    cpu_per_poll_ms = models.FloatField(default=0.0)
    #: The last downsampling/retention pass over its routers: when, and how long it took.
    retention_at = models.DateTimeField(null=True, blank=True)
    retention_ms = models.FloatField(default=0.0)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
