"""The authentication backend: Django's ModelBackend behind the sign-in throttle.

Every password check (browser sign-in, /api/auth/token/, the admin's sign-in) goes through
authenticate() and so through here: an attempt over the limits raises SignInThrottled before
the password is hashed, which the views and SignInThrottledMiddleware answer with a 429.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend

from controlplane.accounts.services import signin_attempt_begin, signin_attempt_finish


def client_address(request) -> str:
    """REMOTE_ADDR: behind a reverse proxy, the proxy must pass the client's address there (a
    header the client can write, such as X-Forwarded-For, is never trusted)."""
    meta = getattr(request, "META", None) or {}
    return str(meta.get("REMOTE_ADDR") or "")


class ThrottledModelBackend(ModelBackend):
    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None  # nothing to check: ModelBackend would not hash either
        attempt = signin_attempt_begin(address=client_address(request), username=str(username))
        user = super().authenticate(request, username=username, password=password, **kwargs)
        signin_attempt_finish(attempt=attempt, succeeded=user is not None)
        return user
