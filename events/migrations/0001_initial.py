# The Event model moved here from convoys: the table (convoys_event) and its data stay as they
# are; only Django's idea of which app owns it changes (state only, no SQL).

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("convoys", "0004_alter_convoy_spent_usd"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Event",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("kind", models.CharField(max_length=60)),
                        ("payload", models.JSONField(blank=True, default=dict)),
                        ("repository_id", models.BigIntegerField(blank=True, db_index=True, null=True)),
                        ("convoy_id", models.BigIntegerField(blank=True, db_index=True, null=True)),
                        ("rig_id", models.BigIntegerField(blank=True, db_index=True, null=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True, db_index=True)),
                    ],
                    options={
                        "db_table": "convoys_event",
                        "ordering": ["id"],
                        "indexes": [
                            models.Index(fields=["convoy_id", "id"], name="event_convoy"),
                            models.Index(fields=["rig_id", "id"], name="event_rig"),
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
