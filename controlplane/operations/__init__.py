"""Operations: /healthz, /readyz, /metrics, worker health and structured logs (docs/operations.md)."""
