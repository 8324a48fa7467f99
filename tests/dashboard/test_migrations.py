"""Migration 0003 packs the history already stored as JSON, and unpacks it going back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from dashboard.routers.packing import MAX_NAME

BEFORE = [("dashboard", "0002_router_graph")]
AFTER = [("dashboard", "0003_packed_samples_and_poller_leases")]
START = datetime(2026, 5, 1, tzinfo=UTC)


def migrate(target: list[tuple[str, str]]) -> Any:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    return executor.loader.project_state(target).apps


def stored(second: int) -> dict[str, Any]:
    return {
        "r": {"peers": second % 4, "in": 10.5, "out": 9.25, "drop": 0.0},
        "s": {
            "router": {
                "q": second,
                "qmax": second + 1,
                "thr": None if second % 2 else 500,
                "in": 1.125,
                "out": 1.0,
                "drop": 0.0,
                "p50": 0.5,
                "p99": 2.75,
                "act": 1,
            }
        },
    }


@pytest.mark.django_db(transaction=True)
def test_json_history_is_packed_and_unpacked_back() -> None:
    old_apps = migrate(BEFORE)
    router = old_apps.get_model("dashboard", "Router").objects.create(
        name="old", base_url="http://127.0.0.1:1"
    )
    old_sample = old_apps.get_model("dashboard", "Sample")
    old_sample.objects.bulk_create(
        old_sample(router=router, time=START + timedelta(seconds=i), data=stored(i))
        for i in range(2500)  # more than one chunk of the migration
    )
    # A stage name no poller would keep: left out, not a failed migration.
    odd = stored(0)
    odd["s"]["x" * (MAX_NAME + 1)] = odd["s"]["router"]
    old_sample.objects.create(router=router, time=START - timedelta(seconds=1), data=odd)
    try:
        new_apps = migrate(AFTER)
        new_sample = new_apps.get_model("dashboard", "Sample")
        rows = list(new_sample.objects.filter(router_id=router.pk).order_by("time"))
        assert rows[0].data == stored(0)
        assert [row.data for row in rows[1:]] == [stored(i) for i in range(2500)]
        with connection.cursor() as cursor:
            cursor.execute("SELECT max(length(data)) FROM dashboard_sample")  # bytes of a blob
            assert cursor.fetchone()[0] < 100  # one stage, packed

        back_apps = migrate(BEFORE)
        back = back_apps.get_model("dashboard", "Sample").objects.filter(router_id=router.pk)
        assert [row.data for row in back.order_by("time")][1:] == [stored(i) for i in range(2500)]
    finally:
        migrate(executor_leaf())


def executor_leaf() -> list[tuple[str, str]]:
    executor = MigrationExecutor(connection)
    return executor.loader.graph.leaf_nodes("dashboard")
