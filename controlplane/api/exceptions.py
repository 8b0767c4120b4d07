"""One place where errors become answers: the API's exception handler (REST_FRAMEWORK's
EXCEPTION_HANDLER) and Django's handler400/403/404/500 (controlplane/urls.py).

A malformed request is a 4xx that says what is wrong. An unexpected error is a 500 that says
only that it happened and its request id; the traceback goes to the log under that id
(logger ``edgeplane.errors``), never to the client: no settings, environment or stack.
JSON for the API (/api/) and the dashboard's chart data (/data/), a plain page elsewhere.
"""

from __future__ import annotations

import logging
import sys
import uuid
from html import escape

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig, SuspiciousOperation
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler, set_rollback

from controlplane.api.parsers import UploadTooLarge

logger = logging.getLogger("edgeplane.errors")

JSON_PREFIXES = ("/api/", "/data/")
REQUEST_ID_HEADER = "X-Request-ID"


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def too_big_message() -> str:
    return (f"the request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes; send less "
            f"(the server's EDGEPLANE_UPLOAD_MAX_BYTES)")


def wants_json(request: HttpRequest | None) -> bool:
    path = getattr(request, "path", "") or ""
    return path.startswith(JSON_PREFIXES)


def client_error_detail(exc: BaseException) -> tuple[int, str] | None:
    """(status, message) for an exception that a malformed request raises, else None.

    A body nested too deep for Python's parser (RecursionError, from a parser that is not
    ours: ``controlplane.api.parsers`` answers it itself) and Django's refusals of a request
    (a body over a limit, a broken multipart form, too many fields) are the client's.
    """
    if isinstance(exc, UploadTooLarge):
        return status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, str(exc)
    if isinstance(exc, RequestDataTooBig):  # Django's own check of the body, before it is read
        return status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, too_big_message()
    if isinstance(exc, RecursionError):
        return status.HTTP_400_BAD_REQUEST, "the request is nested too deep to read; send a flatter body"
    if isinstance(exc, (MultiPartParserError, SuspiciousOperation, BadRequest)):
        return status.HTTP_400_BAD_REQUEST, f"malformed request: {exc}"
    return None


def api_exception_handler(exc: BaseException, context: dict) -> Response | None:
    """DRF's answers for its own exceptions; 4xx for a malformed request's; None (Django's
    handler500, below) for anything else."""
    response = exception_handler(exc, context)
    if response is not None:
        return response
    known = client_error_detail(exc)
    if known is None:
        return None
    set_rollback()
    code, message = known
    body = {"detail": message}
    if isinstance(exc, UploadTooLarge):
        body["limit_bytes"] = exc.limit
    return Response(body, status=code)


# -- Django's handlers (controlplane/urls.py) -----------------------------------------------------------


def _plain_page(code: int, title: str, message: str, request_id: str | None = None) -> HttpResponse:
    ref = f"<p>Request id: <code>{escape(request_id)}</code></p>" if request_id else ""
    html = (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title></head>"
            f"<body><h1>{escape(title)}</h1><p>{escape(message)}</p>{ref}"
            f"<p><a href=\"/\">Back to the runs</a></p></body></html>")
    return HttpResponse(html, status=code, content_type="text/html; charset=utf-8")


def _answer(request: HttpRequest, code: int, title: str, message: str, request_id: str | None = None,
            **extra) -> HttpResponse:
    if wants_json(request):
        body = {"detail": message, **extra}
        if request_id:
            body["request_id"] = request_id
        response: HttpResponse = JsonResponse(body, status=code)
    else:
        response = _plain_page(code, title, message, request_id)
    if request_id:
        response[REQUEST_ID_HEADER] = request_id
    return response


def _message(exception: BaseException | None, default: str) -> str:
    text = str(exception.args[0]) if exception is not None and exception.args else ""
    return text if text and isinstance(exception.args[0], str) else default


def bad_request(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    if isinstance(exception, UploadTooLarge):
        return _answer(request, 413, "Too large", str(exception), limit_bytes=exception.limit)
    if isinstance(exception, RequestDataTooBig):
        return _answer(request, 413, "Too large", too_big_message())
    return _answer(request, 400, "Bad request", _message(exception, "the request is malformed"))


def permission_denied(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return _answer(request, 403, "Forbidden", _message(exception, "you may not do this"))


def page_not_found(request: HttpRequest, exception: BaseException | None = None) -> HttpResponse:
    return _answer(request, 404, "Not found", _message(exception, f"nothing at {request.path}"))


def server_error(request: HttpRequest) -> HttpResponse:
    """A 500 with a request id and nothing else; the traceback is logged under that id."""
    request_id = new_request_id()
    exc_info = sys.exc_info()
    known = client_error_detail(exc_info[1]) if exc_info[1] is not None else None
    if known is not None:  # a malformed request that reached Django's handler outside a view
        code, message = known
        return _answer(request, code, "Bad request", message)
    logger.error("request %s failed: %s %s", request_id, request.method, request.path,
                 exc_info=exc_info if exc_info[0] else None, extra={"request_id": request_id})  # a JSON log field
    return _answer(request, 500, "Server error",
                   f"the server failed on this request; it is logged under request id {request_id}",
                   request_id=request_id)
