from django.contrib import admin

from controlplane.telemetry.models import (
    Evaluation,
    PromptObservation,
    PromptState,
    RunToken,
    SelectionDecision,
    StepSummary,
)


@admin.register(RunToken)
class RunTokenAdmin(admin.ModelAdmin):
    list_display = ("run", "created_at", "revoked_at")
    readonly_fields = ("key",)


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
