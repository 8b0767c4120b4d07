"""Notification reads: what a user sees (their teams' notifications), what is unread, the
team's webhook and its recent deliveries."""

from __future__ import annotations

from django.db.models import Exists, OuterRef, QuerySet

from controlplane.accounts.models import Team
from controlplane.notifications.models import Notification, NotificationRead, WebhookDelivery, WebhookEndpoint

PAGE = 50  # notifications per page


def notifications_for_user(user) -> QuerySet[Notification]:
    """The notifications of every team the user is a member of, newest first, each with ``read``."""
    if not getattr(user, "is_authenticated", False):
        return Notification.objects.none()
    read = NotificationRead.objects.filter(notification=OuterRef("pk"), user=user)
    return (Notification.objects.filter(team__memberships__user=user)
            .annotate(read=Exists(read)).select_related("team", "run").order_by("-pk"))


def notifications_unread(user) -> QuerySet[Notification]:
    if not getattr(user, "is_authenticated", False):
        return Notification.objects.none()
    read = NotificationRead.objects.filter(notification=OuterRef("pk"), user=user)
    return Notification.objects.filter(team__memberships__user=user).exclude(Exists(read))


def notifications_unread_count(user) -> int:
    """The header badge's figure: one COUNT over the user's teams (indexed by team, and by user for reads)."""
    return notifications_unread(user).count()


def notifications_page(user, *, before: int | None = None, unread_only: bool = False) -> list[Notification]:
    """A page of the user's notifications, newest first; ``before``: only those with a lower id."""
    rows = notifications_for_user(user)
    if before is not None:
        rows = rows.filter(pk__lt=before)
    if unread_only:
        rows = rows.filter(read=False)
    return list(rows[:PAGE + 1])  # one more than a page: says whether there are older ones


def webhook_of(team: Team) -> WebhookEndpoint | None:
    return WebhookEndpoint.objects.filter(team=team).first()


def webhook_deliveries_recent(endpoint: WebhookEndpoint, limit: int = 20) -> list[WebhookDelivery]:
    return list(endpoint.deliveries.select_related("notification").order_by("-pk")[:limit])
