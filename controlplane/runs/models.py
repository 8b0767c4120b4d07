"""Models of the runs app. None yet."""
