"""Cursor pagination: stable under inserts, and cheap at any depth (no OFFSET)."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination


class RunPagination(CursorPagination):
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class DecisionPagination(CursorPagination):
    """Decisions in insertion order (id). Filtered by prompt or by (method, action), the
    query meets the (run, prompt_key, step) or (run, method, action, step) index."""

    ordering = "id"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class PromptStatePagination(CursorPagination):
    """Prompt states by key: unique within a run, so the cursor needs no offset."""

    ordering = "prompt_key"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
