"""API writes that belong to no other app: a user's API token."""

from __future__ import annotations

from rest_framework.authtoken.models import Token


def api_token_get_or_create(*, user) -> str:
    """The user's API token key (``Authorization: Token <key>``), created on first use."""
    token, _ = Token.objects.get_or_create(user=user)
    return token.key
