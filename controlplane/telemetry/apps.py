from django.apps import AppConfig


class TelemetryConfig(AppConfig):
    name = "controlplane.telemetry"
    label = "telemetry"

    def ready(self) -> None:
        from controlplane.telemetry import signals  # noqa: F401  (connects the run partition receivers)
