"""Training engines.

Each imports workers.selection, reports through the telemetry sink, and imports nothing of Django.
"""
