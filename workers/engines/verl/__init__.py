"""The distributed engine: verl 0.9 + vLLM on Ray.

The selectors attach to verl's V1 trainer; see shared/VERL.md for where each one hooks in.
"""
