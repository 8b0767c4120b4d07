"""Models of the telemetry app. None yet."""
