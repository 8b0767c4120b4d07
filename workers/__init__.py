"""Everything that runs outside the web process: Celery tasks, selection algorithms, engines."""
