"""Routes of the JSON API, mounted at /api/ (see docs/api.md)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from controlplane.api import views

app_name = "api"

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(permission_classes=[], authentication_classes=[]), name="schema"),
    # Swagger UI from drf-spectacular-sidecar's files on this server (SWAGGER_UI_DIST="SIDECAR"); the split
    # view serves its start-up script at ?script instead of inline, for the Content-Security-Policy.
    path("docs/", SpectacularSwaggerSplitView.as_view(url_name="api:schema", permission_classes=[],
                                                      authentication_classes=[]), name="docs"),
    path("auth/token/", views.TokenView.as_view(), name="token"),
    path("datasets/", views.DatasetListView.as_view(), name="datasets"),
    path("datasets/<int:dataset_id>/", views.DatasetDetailView.as_view(), name="dataset"),
    path("runs/", views.RunListView.as_view(), name="runs"),
    path("runs/<int:run_id>/", views.RunDetailView.as_view(), name="run"),
    path("runs/<int:run_id>/cancel/", views.RunCancelView.as_view(), name="run-cancel"),
    path("runs/<int:run_id>/resume/", views.RunResumeView.as_view(), name="run-resume"),
    path("runs/<int:run_id>/steps/", views.RunStepsView.as_view(), name="run-steps"),
    path("runs/<int:run_id>/evaluations/", views.RunEvaluationsView.as_view(), name="run-evaluations"),
    path("runs/<int:run_id>/decisions/", views.RunDecisionsView.as_view(), name="run-decisions"),
    path("runs/<int:run_id>/prompts/", views.RunPromptsView.as_view(), name="run-prompts"),
    path("teams/<slug:slug>/budget/", views.TeamBudgetView.as_view(), name="team-budget"),
    path("teams/<slug:slug>/telemetry-retention/", views.TeamTelemetryRetentionView.as_view(),
         name="team-telemetry-retention"),
    path("ingest/runs/<int:run_id>/steps/", views.IngestView.as_view(), name="ingest-steps"),
]
