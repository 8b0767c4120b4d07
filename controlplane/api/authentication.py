"""API tokens of users, and run tokens: how a remote engine authenticates to the ingestion endpoint.

``Authorization: Token <key>``: a user's token, from POST /api/auth/token/; it expires
EDGEPLANE_API_TOKEN_DAYS after it was issued and is revoked when the user's password changes.

``Authorization: RunToken <key>``. The token proves only "I report for run N": it
carries no user, so it opens nothing but ``/api/ingest/runs/N/...`` (RunTokenScoped).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from controlplane.api.services import api_token_expires_at
from controlplane.telemetry.services import token_run

KEYWORD = "RunToken"
HOW_TO_RENEW = "get a new one: POST your username and password to /api/auth/token/"


class TokenAuthentication(authentication.TokenAuthentication):
    """DRF's user token, refused once expired or revoked, with what to do about it."""

    def authenticate_credentials(self, key):
        model = self.get_model()
        token = model.objects.select_related("user").filter(key=key).first()
        if token is None:
            raise exceptions.AuthenticationFailed(
                f"unknown or revoked API token (a password change revokes a user's tokens): {HOW_TO_RENEW}")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("this API token's user is deactivated")
        expires = api_token_expires_at(token)
        if expires <= timezone.now():
            raise exceptions.AuthenticationFailed(
                f"API token expired at {expires:%Y-%m-%d %H:%M} UTC (tokens last "
                f"{settings.EDGEPLANE_API_TOKEN_DAYS} days): {HOW_TO_RENEW}")
        return token.user, token


@dataclass(frozen=True)
class RunTokenAuth:
    """``request.auth`` after a run token was accepted."""

    run_id: int


class RunTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        parts = authentication.get_authorization_header(request).split()
        if not parts or parts[0].decode("latin-1") != KEYWORD:
            return None  # not ours: the request stays unauthenticated (401)
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(f"give exactly one key: 'Authorization: {KEYWORD} <key>'")
        try:
            key = parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise exceptions.AuthenticationFailed("a run token is ASCII") from exc
        run_id = token_run(key)
        if run_id is None:
            raise exceptions.AuthenticationFailed("unknown or revoked run token (tokens end with their run)")
        return AnonymousUser(), RunTokenAuth(run_id=run_id)

    def authenticate_header(self, request) -> str:
        return KEYWORD


class RunTokenScheme(OpenApiAuthenticationExtension):
    """Describes the run token in the OpenAPI schema."""

    target_class = "controlplane.api.authentication.RunTokenAuthentication"
    name = "runToken"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": f"'{KEYWORD} <key>': a token scoped to one run, revoked when the run ends"}
