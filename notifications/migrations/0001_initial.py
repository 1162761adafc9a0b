# Notification, Webhook and WebhookDelivery moved here from convoys: the tables
# (convoys_notification, convoys_webhook, convoys_webhookdelivery) and their rows stay as they
# are; only Django's idea of which app owns them changes (state only, no SQL).
# convoys/migrations/0007 then drops them from convoys' state.

import django.core.validators
import django.db.models.deletion
import notifications.models
import notifications.webhook_urls
import uuid
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('convoys', '0006_webhook_public_urls_and_secrets'),
        ('rigs', '0004_alter_agent_runtime_command'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Notification',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('base_moved', 'base moved'), ('rebase_needed', 'rebase needed'), ('interface_changed', 'interface changed'), ('dependencies_changed', 'dependencies changed'), ('unblocked', 'Unblocked'), ('overlap', 'overlapping work'), ('gate_failed', 'gate failed'), ('merge_conflicted', 'merge conflicted'), ('merged', 'Merged'), ('assigned', 'work assigned'), ('escalation', 'Escalation'), ('info', 'Info')], max_length=30)),
                        ('severity', models.CharField(choices=[('info', 'Info'), ('warning', 'Warning'), ('critical', 'Critical')], default='info', max_length=10)),
                        ('summary', models.CharField(max_length=300)),
                        ('action', models.TextField(blank=True)),
                        ('changes', models.JSONField(blank=True, default=dict)),
                        ('source_commits', models.CharField(blank=True, help_text='old..new', max_length=100)),
                        ('cascade', models.UUIDField(db_index=True, default=uuid.uuid4)),
                        ('depth', models.PositiveSmallIntegerField(default=0)),
                        ('fingerprint', models.CharField(help_text='Identical notifications merge.', max_length=64)),
                        ('occurrences', models.PositiveIntegerField(default=1)),
                        ('acked_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('rig', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='notifications', to='rigs.rig')),
                        ('source_merge_request', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='rigs.mergerequest')),
                        ('source_rig', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='rigs.rig')),
                    ],
                    options={
                        'db_table': 'convoys_notification',
                        'ordering': ['-created_at', '-id'],
                    },
                ),
                migrations.CreateModel(
                    name='Webhook',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('url', models.URLField(help_text='http(s) endpoint on a public address that receives a POST.', max_length=500, validators=[django.core.validators.URLValidator(schemes=['http', 'https']), notifications.webhook_urls.validate_webhook_url])),
                        ('secret', models.CharField(default=notifications.models.webhook_secret_new, help_text='Signs each delivery (webhook-signature). whsec_<base64>: the key is the decoded bytes; any other text: its UTF-8 bytes.', max_length=200)),
                        ('kinds', models.JSONField(blank=True, default=list, help_text='Notification kinds to send; empty sends all.')),
                        ('is_active', models.BooleanField(default=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('repository', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='webhooks', to='rigs.repository')),
                    ],
                    options={
                        'db_table': 'convoys_webhook',
                        'ordering': ['repository_id', 'id'],
                    },
                ),
                migrations.CreateModel(
                    name='WebhookDelivery',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('event', models.CharField(max_length=60)),
                        ('payload', models.JSONField(default=dict)),
                        ('state', models.CharField(choices=[('pending', 'Pending'), ('delivered', 'Delivered'), ('failed', 'Failed')], default='pending', max_length=10)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('response_status', models.PositiveSmallIntegerField(blank=True, null=True)),
                        ('last_error', models.TextField(blank=True)),
                        ('next_attempt_at', models.DateTimeField(blank=True, null=True)),
                        ('delivered_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('notification', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='notifications.notification')),
                        ('webhook', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='deliveries', to='notifications.webhook')),
                    ],
                    options={
                        'verbose_name_plural': 'webhook deliveries',
                        'db_table': 'convoys_webhookdelivery',
                        'ordering': ['-created_at', '-id'],
                    },
                ),
                migrations.AddIndex(
                    model_name='notification',
                    index=models.Index(fields=['rig', 'acked_at', 'created_at'], name='notification_inbox'),
                ),
                migrations.AddConstraint(
                    model_name='notification',
                    constraint=models.UniqueConstraint(condition=models.Q(('acked_at__isnull', True)), fields=('rig', 'fingerprint'), name='notification_unacked_unique'),
                ),
                migrations.AddIndex(
                    model_name='webhookdelivery',
                    index=models.Index(fields=['state', 'next_attempt_at'], name='webhook_delivery_due'),
                ),
            ],
            database_operations=[],
        ),
    ]
