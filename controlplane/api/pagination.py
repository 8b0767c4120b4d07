"""Cursor pagination: stable under inserts, and cheap at any depth (no OFFSET).

A cursor is read back only if its position fits the ordering column (a whole number within
a bigint for ids, text without NUL for keys): DRF's own decoding passes any text on to the
query, so a forged cursor (``p=abc``) was a 500. A bad one is a 404 "Invalid cursor", as DRF
answers for one it cannot decode.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


class CheckedCursorPagination(CursorPagination):
    invalid_cursor_message = "Invalid cursor: use the next or previous link of a page, or start without ?cursor="

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None and not self._position_fits(cursor.position):
            raise NotFound(self.invalid_cursor_message)
        return cursor

    def _position_fits(self, position: str) -> bool:
        name = self.ordering if isinstance(self.ordering, str) else self.ordering[0]
        try:
            field = self._model._meta.get_field(name.lstrip("-"))
        except (AttributeError, LookupError):
            return "\x00" not in position
        if isinstance(field, (models.IntegerField, models.AutoField)):
            text = position[1:] if position[:1] == "-" else position
            return text.isascii() and text.isdigit() and len(text) <= 19 and BIGINT_MIN <= int(position) <= BIGINT_MAX
        if "\x00" in position:
            return False
        try:
            field.to_python(position)
        except ValidationError:
            return False
        return True


class RunPagination(CheckedCursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class DecisionPagination(CheckedCursorPagination):
    """Decisions in insertion order (id), through the (run_id, id) primary key of the run's
    partition on Postgres (controlplane.telemetry.partitions)."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class PromptStatePagination(CheckedCursorPagination):
    """Prompt states by key: unique within a run, so the cursor needs no offset."""

    ordering = "prompt_key"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
