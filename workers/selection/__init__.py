"""Prompt-selection algorithms, framework-free: numpy arrays in, numpy arrays out.

The math lives in one module per method (grpo, dapo, greso, hive, hora, rlzvp, lze,
metrics); ``methods/`` holds each method's ``Selector`` (layers, hooks, composition
constraints, typed parameters, panels); ``registry`` is the only place that knows which
methods exist; ``pipeline`` composes the selectors by layer; ``ledger`` keeps per-prompt
state, ``decisions`` the audit records, ``accounting`` the compute counts. The spec is
docs/algorithms.md. Nothing here imports Django, an engine or the control plane.
"""
