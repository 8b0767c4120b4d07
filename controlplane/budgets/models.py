"""Models of the budgets app. None yet."""
