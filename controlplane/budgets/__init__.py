"""Team budgets and the usage ledger."""
