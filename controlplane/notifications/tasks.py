"""Celery tasks of notifications: thin, each calls one service. Names are the wire format;
both are routed to the control queue (settings.CELERY_TASK_ROUTES)."""

from __future__ import annotations

from controlplane.celery import app


@app.task(name="edgeplane.deliver_webhook", bind=True, max_retries=None, acks_late=True)
def deliver_webhook(self, delivery_id: int) -> str:
    """One attempt of a webhook delivery; a 5xx, 429, timeout or connection error comes back after
    the service's backoff, until EDGEPLANE_WEBHOOK_ATTEMPTS attempts (counted in the delivery's row)."""
    from controlplane.notifications.services import webhook_deliver

    outcome = webhook_deliver(delivery_id=delivery_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return str(outcome.status)


@app.task(name="edgeplane.resend_webhooks")
def resend_webhooks() -> list[int]:
    """Beat: deliveries whose message was lost are sent again."""
    from controlplane.notifications.services import webhook_deliveries_resend

    return webhook_deliveries_resend()
