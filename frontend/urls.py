"""Routes of the dashboard, mounted at the site root: pages, and the JSON its charts poll
under data/ (see frontend/data_views.py)."""

from django.urls import path

from frontend import data_views, exports, logs_views, views

app_name = "frontend"

urlpatterns = [
    path("", views.runs, name="runs"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("team/", views.team_switch, name="team-switch"),
    path("runs/new/", views.run_new, name="run-new"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/cancel/", views.run_cancel_view, name="run-cancel"),
    path("runs/<int:run_id>/audit/", views.audit, name="audit"),
    path("runs/<int:run_id>/prompt/", views.prompt, name="prompt"),
    path("compare/", views.compare, name="compare"),
    path("teams/<slug:slug>/budget/", views.budget, name="budget"),
    path("data/forecast/", data_views.forecast, name="data-forecast"),
    path("data/runs/<int:run_id>/series/", data_views.series, name="data-series"),
    path("data/runs/<int:run_id>/evaluations/", data_views.evaluations, name="data-evaluations"),
    path("data/runs/<int:run_id>/actions/", data_views.actions, name="data-actions"),
    path("data/runs/<int:run_id>/hora/", data_views.hora, name="data-hora"),
    path("data/runs/<int:run_id>/energy/", data_views.energy, name="data-energy"),
    path("data/runs/<int:run_id>/edge/", data_views.edge, name="data-edge"),
    path("data/runs/<int:run_id>/heatmap/", data_views.heatmap, name="data-heatmap"),
    path("data/runs/<int:run_id>/recent/", data_views.recent, name="data-recent"),
    # the run page's tools: downloads of each chart's data and of the audit trail, the worker's log lines
    path("data/runs/<int:run_id>/export/", exports.chart_export, name="data-export"),
    path("runs/<int:run_id>/audit/export/", exports.audit_export, name="audit-export"),
    path("data/runs/<int:run_id>/logs/", logs_views.logs, name="data-logs"),
    path("runs/<int:run_id>/logs/download/", logs_views.logs_download, name="logs-download"),
]
