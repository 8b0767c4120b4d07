"""Prompt-selection algorithms, framework-free: numpy arrays in, numpy arrays out.

Method modules hold the math (grpo, dapo via the pipeline's post-filter, greso, hive,
hora, rlzvp, lze, metrics); ``ledger`` the per-prompt state; ``decisions`` the audit
records; ``accounting`` the compute counts; ``pipeline`` composes the methods at their
layers. Nothing here imports Django, an engine or the control plane.
"""
