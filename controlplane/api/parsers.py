"""Request bodies read within bounds: a size checked before anything is read, JSON nested
only so deep and holding only finite numbers, uploads counted while they stream.

DRF's own parsers read ``request`` directly, past Django's DATA_UPLOAD_MAX_MEMORY_SIZE, and
Python's json answers a body of 100,000 ``[`` with a RecursionError (a 500): these answer
413 and 400 with a message instead.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.files.uploadhandler import FileUploadHandler
from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Deeper than any body the API takes (a run config is three levels, an ingest record four).
MAX_JSON_DEPTH = 32
# Room for the form's other fields and multipart boundaries on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 1024 * 1024


class UploadTooLarge(RequestDataTooBig):
    """A body over its limit: 413 with the limit (the API's exception handler and handler400)."""

    status_code = 413

    def __init__(self, what: str, size: int | None, limit: int) -> None:
        self.limit = limit
        got = f" ({size} bytes)" if size is not None else ""
        super().__init__(f"{what}{got} is over the limit of {limit} bytes; send less "
                         f"(the server's EDGEPLANE_UPLOAD_MAX_BYTES)")


def content_length(meta: dict) -> int | None:
    try:
        value = int(meta.get("CONTENT_LENGTH") or 0)
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def body_limit() -> int:
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def check_body_size(meta: dict, limit: int, what: str = "the request body") -> None:
    """Refuse by Content-Length, before a byte of the body is read."""
    size = content_length(meta)
    if size is not None and size > limit:
        raise UploadTooLarge(what, size, limit)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; send a finite number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a number (a finite double)")
    return value


_SCALARS = frozenset({str, int, float, bool, type(None)})


def json_depth_over(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects deeper than ``limit`` (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            # Members all of scalar types (a step record's columns: most of its bytes) are passed
            # over in C, without a Python step each: 1.9 ms of a 3,072-row step's 0.4 MB otherwise.
            if _SCALARS.issuperset(map(type, children)):
                continue
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def json_loads_bounded(text: str | bytes, max_depth: int = MAX_JSON_DEPTH, *, finite: bool = True) -> Any:
    """``json.loads`` that answers ValueError, never RecursionError: at most ``max_depth``
    levels of nesting and, with ``finite``, no NaN or Infinity (as literals or as numbers too
    large for a double)."""
    numbers: dict[str, Any] = {"parse_constant": _refuse_constant, "parse_float": _finite_float} if finite else {}
    try:
        value = json.loads(text, **numbers)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    if json_depth_over(value, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth} levels")
    return value


class BoundedJSONParser(parsers.JSONParser):
    """JSON within DATA_UPLOAD_MAX_MEMORY_SIZE, nested at most MAX_JSON_DEPTH, finite numbers only."""

    finite = True

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        limit = body_limit()
        if request is not None:
            check_body_size(request.META, limit)
        if stream is None:
            return None
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise UploadTooLarge("the request body", None, limit)
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = raw.decode(encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError(f"the body is not valid {encoding} text: {exc}; send JSON in UTF-8") from None
        try:
            return json_loads_bounded(text, finite=self.finite)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class RecordJSONParser(BoundedJSONParser):
    """The ingest endpoint's: bounded in size and depth, but a NaN or an infinity is read, so that
    the step record's own check refuses it naming its field (workers.record), not "a number".
    A body sent with ``Content-Encoding: gzip`` (the HTTP sink compresses large steps) is
    inflated within EDGEPLANE_INGEST_MAX_BYTES, counted as it inflates: a small body that would
    inflate past the limit is a 413 before it fills memory."""

    finite = False

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        limit = settings.EDGEPLANE_INGEST_MAX_BYTES
        meta = request.META if request is not None else {}
        check_body_size(meta, limit)
        if stream is None:
            return None
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise UploadTooLarge("the request body", None, limit)
        encoding = meta.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding == "gzip":
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                raw = inflate.decompress(raw, limit + 1)
            except zlib.error as exc:
                raise ParseError(f"the body is not valid gzip ({exc}); send it gzip-compressed whole, "
                                 "or without Content-Encoding") from None
            if len(raw) > limit or inflate.unconsumed_tail:
                raise UploadTooLarge("the decompressed request body", None, limit)
        elif encoding not in ("", "identity"):
            raise ParseError(f"Content-Encoding {encoding!r} is not read here; send gzip or no encoding")
        try:
            return json_loads_bounded(raw.decode(parser_context.get("encoding", settings.DEFAULT_CHARSET)),
                                      finite=False)
        except UnicodeDecodeError as exc:
            raise ParseError(f"the body is not valid UTF-8 text: {exc}; send JSON in UTF-8") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None


class BoundedFormParser(parsers.FormParser):
    """A url-encoded form within DATA_UPLOAD_MAX_MEMORY_SIZE (DRF's reads any length into memory)."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        if request is not None:
            check_body_size(request.META, body_limit())
        try:
            return super().parse(stream, media_type, parser_context)
        except UnicodeDecodeError as exc:
            raise ParseError(f"the form is not valid text: {exc}") from None


class LimitedUploadHandler(FileUploadHandler):
    """First of FILE_UPLOAD_HANDLERS: refuses an upload before it is read, and while it streams.

    Before reading: the view's gate (``request.upload_gate(request)``, a role check: a viewer
    gets 403 before a byte is read), then Content-Length against EDGEPLANE_UPLOAD_MAX_BYTES
    plus the form's overhead. While reading: the files' bytes so far against the limit; over it,
    every file the handlers opened is closed (a temporary file is deleted on close) and the
    request is refused with 413.
    """

    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.received = 0

    @property
    def limit(self) -> int:
        return settings.EDGEPLANE_UPLOAD_MAX_BYTES

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        gate = getattr(self.request, "upload_gate", None)
        if gate is not None:
            gate(self.request)
        size = content_length if isinstance(content_length, int) else None
        if size is not None and size > self.limit + MULTIPART_OVERHEAD_BYTES:
            raise UploadTooLarge("the upload", size, self.limit)

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            self._close_open_files()
            raise UploadTooLarge("the uploaded file", None, self.limit)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None

    def _close_open_files(self) -> None:
        for handler in getattr(self.request, "upload_handlers", ()):
            file = getattr(handler, "file", None)
            if handler is not self and file is not None:
                try:
                    file.close()  # a TemporaryUploadedFile deletes itself
                except OSError:
                    pass


class BoundedMultiPartParser(parsers.MultiPartParser):
    """Multipart through the upload handlers, LimitedUploadHandler first (FILE_UPLOAD_HANDLERS
    names it; added here too, so the API stays bounded whatever the setting says)."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        if request is not None:
            handlers = request.upload_handlers
            if not any(isinstance(h, LimitedUploadHandler) for h in handlers):
                handlers.insert(0, LimitedUploadHandler(request._request))
        try:
            return super().parse(stream, media_type, parser_context)
        except UnicodeDecodeError as exc:
            raise ParseError(f"the form is not valid text: {exc}") from None
