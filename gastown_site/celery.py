"""The Celery app. Tasks live in each app's `tasks.py` and are thin wrappers over services."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gastown_site.settings")

app = Celery("gastown")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
