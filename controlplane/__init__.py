"""Edgeplane's Django project: settings, URLs, the Celery app, and the apps that own the database."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
