"""The embedded engine: torch + transformers on the CPU or one GPU.

Runs standalone: `python -m workers.engines.local --config ...`.
"""
