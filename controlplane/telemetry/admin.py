from django.contrib import admin

from controlplane.telemetry.models import RunToken


@admin.register(RunToken)
class RunTokenAdmin(admin.ModelAdmin):
    list_display = ("run", "created_at", "revoked_at")
    readonly_fields = ("key",)
