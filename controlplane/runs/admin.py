from django.contrib import admin

from controlplane.runs.models import Attempt, Run


class AttemptInline(admin.TabularInline):
    model = Attempt
    extra = 0
    readonly_fields = ("number", "status", "worker", "resumed_from_step", "reason", "started_at", "finished_at")


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "team", "status", "steps_completed", "attempts_count", "created_at")
    list_filter = ("status", "team", "engine")
    search_fields = ("name",)
    raw_id_fields = ("baseline",)  # Run.clean keeps it within the team
    inlines = [AttemptInline]
