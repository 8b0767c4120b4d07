from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Health, metrics and structured logs for operators (docs/operations.md)."""

    name = "controlplane.operations"
    label = "operations"

    def ready(self) -> None:
        # Celery's worker and beat load Django (and so this) before they set up logging: with a
        # setup_logging receiver Celery keeps LOGGING's JSON handler instead of its own plain one.
        from celery import signals

        from controlplane.operations.logs import celery_setup_logging
        from controlplane.operations.metrics import worker_metrics_serve

        signals.setup_logging.connect(celery_setup_logging, weak=False, dispatch_uid="edgeplane-logging")
        signals.worker_ready.connect(worker_metrics_serve, weak=False, dispatch_uid="edgeplane-worker-metrics")
