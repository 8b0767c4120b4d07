"""Notifications: what a team should hear about (runs ended, budget thresholds, step alerts),
shown in the dashboard and sent to the team's webhook."""
