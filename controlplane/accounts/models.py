"""Models of the accounts app. None yet."""
