"""A sign-in refused by the throttle, wherever authenticate() was called from (the admin's
sign-in, any form), answers 429 with Retry-After and the reason, not a 500."""

from __future__ import annotations

from django.http import HttpResponse, JsonResponse

from controlplane.accounts.services import SignInThrottled


def throttled_response(exc: SignInThrottled, request) -> HttpResponse:
    if "json" in request.headers.get("Accept", "") or request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse({"detail": exc.message}, status=429)
    else:
        response = HttpResponse(exc.message, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(exc.retry_after)
    return response


class SignInThrottledMiddleware:
    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, SignInThrottled):
            return throttled_response(exception, request)
        return None
