"""Models of the datasets app. None yet."""
