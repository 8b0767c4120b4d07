"""The header's notifications link with the unread count, on every page (base.html)."""

from __future__ import annotations

from django import template
from django.conf import settings
from django.utils import timezone
from django.utils.timesince import timesince

from controlplane.notifications.selectors import notifications_unread_count

register = template.Library()


@register.filter
def ago(moment) -> str:
    """"just now" under a minute, else Django's "3 minutes ago"."""
    if moment is None:
        return ""
    if (timezone.now() - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment)} ago"


@register.inclusion_tag("frontend/_notifications_badge.html", takes_context=True)
def notifications_badge(context) -> dict:
    user = context.get("user")
    unread = notifications_unread_count(user) if getattr(user, "is_authenticated", False) else 0
    return {"unread": unread, "poll_ms": int(1000 * settings.EDGEPLANE_NOTIFICATIONS_POLL_SECONDS)}
