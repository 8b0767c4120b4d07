"""Celery tasks: thin wrappers that each call one service. They arrive with issue #4."""
