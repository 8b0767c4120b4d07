"""API writes that belong to no other app: a user's API token."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone
from rest_framework.authtoken.models import Token


def api_token_expires_at(token: Token) -> dt.datetime:
    """A token lasts EDGEPLANE_API_TOKEN_DAYS from when it was issued."""
    return token.created + dt.timedelta(days=settings.EDGEPLANE_API_TOKEN_DAYS)


def api_token_issue(*, user) -> Token:
    """The user's API token (``Authorization: Token <key>``): the current one while it lasts,
    else a new one (an expired token is replaced, never extended)."""
    token, created = Token.objects.get_or_create(user=user)
    if not created and api_token_expires_at(token) <= timezone.now():
        token.delete()
        token = Token.objects.create(user=user)
    return token


def api_token_get_or_create(*, user) -> str:
    """The user's API token key, created on first use and replaced once expired."""
    return api_token_issue(user=user).key
