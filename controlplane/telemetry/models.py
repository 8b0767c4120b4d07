"""Run tokens: what a remote engine presents to the ingestion endpoint."""

from __future__ import annotations

import secrets

from django.db import models


def new_key() -> str:
    return secrets.token_urlsafe(32)


class RunToken(models.Model):
    """Scoped to one run; revoked when the run ends."""

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="tokens")
    key = models.CharField(max_length=64, unique=True, default=new_key)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
