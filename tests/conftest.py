"""Shared pytest fixtures. Tests mirror the code tree: tests/<package>/test_<module>.py."""
