from django.apps import AppConfig


class OperationsConfig(AppConfig):
    """Health, metrics and structured logs for operators (docs/operations.md)."""

    name = "controlplane.operations"
    label = "operations"

    def ready(self) -> None:
        import logging

        # Python's warnings become records (logger py.warnings) in LOGGING's format, not raw stderr
        # text: Celery's worker warns before it sets up its logging (running as root, say).
        logging.captureWarnings(True)
        # Celery's worker and beat load Django (and so this) before they set up logging: with a
        # setup_logging receiver Celery keeps LOGGING's JSON handler instead of its own plain one.
        from celery import signals

        from controlplane.operations.logs import celery_setup_logging, celery_task_postrun, celery_task_prerun
        from controlplane.operations.metrics import multiproc_dir_reset, pool_process_shutdown, worker_metrics_serve

        signals.setup_logging.connect(celery_setup_logging, weak=False, dispatch_uid="edgeplane-logging")
        signals.task_prerun.connect(celery_task_prerun, weak=False, dispatch_uid="edgeplane-log-prerun")
        signals.task_postrun.connect(celery_task_postrun, weak=False, dispatch_uid="edgeplane-log-postrun")
        # The worker's lines of each run, kept for the run page's logs panel (run_logs.py).
        from controlplane.operations import run_logs

        signals.task_prerun.connect(run_logs.celery_task_prerun, weak=False, dispatch_uid="edgeplane-run-logs-start")
        signals.task_postrun.connect(run_logs.celery_task_postrun, weak=False, dispatch_uid="edgeplane-run-logs-end")
        signals.worker_ready.connect(worker_metrics_serve, weak=False, dispatch_uid="edgeplane-worker-metrics")
        # A prefork worker's samples (PROMETHEUS_MULTIPROC_DIR): a clean folder before the pool starts, and an
        # ended pool process's gauges out of the sums.
        signals.worker_init.connect(multiproc_dir_reset, weak=False, dispatch_uid="edgeplane-metrics-reset")
        signals.worker_process_shutdown.connect(pool_process_shutdown, weak=False,
                                                dispatch_uid="edgeplane-metrics-process-dead")
