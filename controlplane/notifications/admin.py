from django.contrib import admin

from controlplane.notifications.models import Notification, WebhookDelivery, WebhookEndpoint


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("created_at", "team", "kind", "severity", "title")
    list_filter = ("kind", "severity")
    readonly_fields = ("dedupe_key",)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("team", "url", "enabled", "last_status", "last_delivery_at")
    exclude = ("secret",)  # shown once on the dashboard's webhook page, never here


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "endpoint", "event", "status", "attempts", "response_code")
    list_filter = ("status",)
