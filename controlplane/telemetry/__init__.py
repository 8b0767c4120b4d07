"""The sink that engines write to: one idempotent record per (run, step), bulk-ingested."""
