"""The JSON API: thin views over the accounts, datasets, runs, budgets and telemetry services."""
