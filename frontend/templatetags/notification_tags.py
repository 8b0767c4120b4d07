"""The header's notifications link with the unread count, on every page (base.html)."""

from __future__ import annotations

from django import template

from controlplane.notifications.selectors import notifications_unread_count

register = template.Library()


@register.inclusion_tag("frontend/_notifications_badge.html", takes_context=True)
def notifications_badge(context) -> dict:
    user = context.get("user")
    unread = notifications_unread_count(user) if getattr(user, "is_authenticated", False) else 0
    return {"unread": unread}
