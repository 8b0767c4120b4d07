from django.contrib import admin

from controlplane.budgets.models import Budget, UsageEntry


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("team", "period_start", "period_end", "limit_device_hours")


@admin.register(UsageEntry)
class UsageEntryAdmin(admin.ModelAdmin):
    list_display = ("team", "run", "step", "device_seconds", "uniform_device_seconds", "recorded_at")
    list_filter = ("team",)
