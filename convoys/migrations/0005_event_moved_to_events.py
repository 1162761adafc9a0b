# Event now belongs to the events app (events/migrations/0001_initial.py): state only, the
# table and its rows stay.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("convoys", "0004_alter_convoy_spent_usd"),
        ("events", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Event")],
            database_operations=[],
        ),
    ]
