"""The Celery app: configured from Django settings (CELERY_*); tasks found by autodiscovery in
each installed app's ``tasks`` module (controlplane/runs/tasks.py)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("edgeplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # INSTALLED_APPS, through the Django fixup
