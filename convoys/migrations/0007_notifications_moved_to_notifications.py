# Notification, Webhook and WebhookDelivery now belong to the notifications app
# (notifications/migrations/0001_initial.py): state only, the tables and their rows stay.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("convoys", "0006_webhook_public_urls_and_secrets"),
        ("notifications", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="WebhookDelivery"),
                migrations.DeleteModel(name="Webhook"),
                migrations.DeleteModel(name="Notification"),
            ],
            database_operations=[],
        ),
    ]
