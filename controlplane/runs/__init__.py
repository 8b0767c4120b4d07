"""Run configs, runs and attempts; how each engine launches and is supervised (local_runs,
verl_runs); the Celery tasks that drive them (tasks); the savings formulas (savings)."""
