"""History samples stored packed (dashboard.routers.packing) instead of as jsonb, without a
separate index on the router (the (router, resolution, time) index serves it), and the
leases through which pollers share the routers."""

from typing import Any

from django.db import migrations, models

import dashboard.routers.packing

CHUNK = 2000


def _storable(data: Any) -> dict[str, Any]:
    """The sample as it can be packed: stages past the bounds (never written by a
    poller that bounded them) are left out rather than failing the migration."""
    stages = {
        name: figures
        for name, figures in list((data or {}).get("s", {}).items())[
            : dashboard.routers.packing.MAX_STAGES
        ]
        if 0 < len(str(name).encode()) <= dashboard.routers.packing.MAX_NAME
    }
    return {"r": (data or {}).get("r", {}), "s": stages}


def _copy(apps: Any, source: str, target: str, convert: Any) -> None:
    sample = apps.get_model("dashboard", "Sample")
    last = 0
    while True:
        rows = list(sample.objects.filter(id__gt=last).order_by("id").only("id", source)[:CHUNK])
        if not rows:
            return
        for row in rows:
            setattr(row, target, convert(getattr(row, source)))
        sample.objects.bulk_update(rows, [target])
        last = rows[-1].id


def pack_samples(apps: Any, schema_editor: Any) -> None:
    _copy(apps, "data", "packed", _storable)


def unpack_samples(apps: Any, schema_editor: Any) -> None:
    _copy(apps, "packed", "data", lambda data: data)


class Migration(migrations.Migration):
    dependencies = [
        ("dashboard", "0002_router_graph"),
    ]

    operations = [
        migrations.CreateModel(
            name="PollerLease",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("name", models.CharField(max_length=200, unique=True)),
                ("host", models.CharField(blank=True, max_length=200)),
                ("pid", models.PositiveIntegerField(default=0)),
                ("started", models.DateTimeField()),
                ("renewed", models.DateTimeField()),
                ("expires", models.DateTimeField(db_index=True)),
                ("routers", models.JSONField(default=list)),
                ("polls_per_s", models.FloatField(default=0.0)),
                ("lag_p50_ms", models.FloatField(default=0.0)),
                ("lag_p99_ms", models.FloatField(default=0.0)),
                ("cpu_per_poll_ms", models.FloatField(default=0.0)),
                ("retention_at", models.DateTimeField(blank=True, null=True)),
                ("retention_ms", models.FloatField(default=0.0)),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.AddField(
            model_name="sample",
            name="packed",
            field=dashboard.routers.packing.PackedSampleField(null=True),
        ),
        migrations.AlterField(
            model_name="sample",
            name="data",
            field=models.JSONField(null=True),
        ),
        migrations.RunPython(pack_samples, unpack_samples, elidable=False),
        migrations.RemoveField(model_name="sample", name="data"),
        migrations.RenameField(model_name="sample", old_name="packed", new_name="data"),
        migrations.AlterField(
            model_name="sample",
            name="data",
            field=dashboard.routers.packing.PackedSampleField(),
        ),
        migrations.AlterField(
            model_name="sample",
            name="router",
            field=models.ForeignKey(
                db_index=False,
                on_delete=models.deletion.CASCADE,
                related_name="samples",
                to="dashboard.router",
            ),
        ),
    ]
