"""Teams, memberships and roles."""
