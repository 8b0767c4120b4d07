from django.contrib import admin

from controlplane.runs.models import (
    Attempt,
    Evaluation,
    PromptObservation,
    PromptState,
    Run,
    SelectionDecision,
    StepSummary,
)


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


@admin.register(StepSummary)
class StepSummaryAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "rollouts_generated", "rollouts_uniform", "rollout_savings", "device_seconds")
    list_filter = ("run",)


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "pass_at_1", "pass_at_k", "k")


@admin.register(PromptObservation)
class PromptObservationAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "prompt_key", "group_size", "pass_rate", "bucket", "trained")
    search_fields = ("prompt_key",)


@admin.register(SelectionDecision)
class SelectionDecisionAdmin(admin.ModelAdmin):
    list_display = ("run", "step", "prompt_key", "method", "action", "message")
    list_filter = ("method", "action")
    search_fields = ("prompt_key",)


@admin.register(PromptState)
class PromptStateAdmin(admin.ModelAdmin):
    list_display = ("run", "prompt_key", "bucket", "pass_rate", "last_step")
    list_filter = ("bucket",)
