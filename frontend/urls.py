"""Routes of the dashboard, mounted at the site root: pages, and the JSON its charts poll
under data/ (see frontend/data_views.py)."""

from django.urls import path

from frontend import (
    compare_views,
    data_views,
    dataset_views,
    exports,
    logs_views,
    notification_views,
    runs_views,
    savings_views,
    team_views,
    views,
)

app_name = "frontend"

urlpatterns = [
    path("", runs_views.runs, name="runs"),
    path("accounts/login/", views.LoginView.as_view(), name="login"),
    path("accounts/logout/", views.LogoutView.as_view(), name="logout"),
    path("datasets/", dataset_views.datasets, name="datasets"),  # GET the list, POST an upload
    path("datasets/<int:dataset_id>/", dataset_views.dataset_detail, name="dataset"),  # GET the preview, POST delete
    path("teams/<slug:slug>/", team_views.team, name="team"),  # GET the page, POST add a member or set a budget
    path("teams/<slug:slug>/members/<int:member_id>/", team_views.member, name="member"),  # POST: role, remove
    path("teams/<slug:slug>/budgets/<int:budget_id>/", team_views.budget, name="team-budget"),  # POST: limit, remove
    path("team/", views.team_switch, name="team-switch"),
    path("runs/new/", views.run_new, name="run-new"),
    path("runs/new/check/", views.run_new_check, name="run-new-check"),
    path("runs/<int:run_id>/", views.run_detail, name="run"),
    path("runs/<int:run_id>/cancel/", views.run_cancel_view, name="run-cancel"),
    path("runs/<int:run_id>/relaunch/", runs_views.run_relaunch_view, name="run-relaunch"),
    path("runs/<int:run_id>/resume/", runs_views.run_resume_view, name="run-resume"),
    path("runs/<int:run_id>/tags/", runs_views.run_tags_view, name="run-tags"),
    path("runs/<int:run_id>/audit/", views.audit, name="audit"),
    path("runs/<int:run_id>/prompt/", views.prompt, name="prompt"),
    path("compare/", compare_views.compare, name="compare"),
    path("teams/<slug:slug>/budget/", views.budget, name="budget"),
    path("data/compare/", compare_views.compare_data, name="data-compare"),
    path("notifications/", notification_views.notifications, name="notifications"),
    path("notifications/read/", notification_views.notifications_read, name="notifications-read"),
    path("data/notifications/unread/", notification_views.notifications_unread, name="notifications-unread"),
    path("teams/<slug:slug>/webhook/", notification_views.webhook, name="webhook"),
    path("teams/<slug:slug>/webhook/test/", notification_views.webhook_test, name="webhook-test"),
    path("teams/<slug:slug>/webhook/secret/", notification_views.webhook_secret, name="webhook-secret"),
    path("teams/<slug:slug>/webhook/remove/", notification_views.webhook_remove, name="webhook-remove"),
    path("data/forecast/", data_views.forecast, name="data-forecast"),
    path("data/runs/", runs_views.runs_live, name="data-runs"),
    path("data/runs/<int:run_id>/series/", data_views.series, name="data-series"),
    path("data/runs/<int:run_id>/evaluations/", data_views.evaluations, name="data-evaluations"),
    path("data/runs/<int:run_id>/actions/", data_views.actions, name="data-actions"),
    path("data/runs/<int:run_id>/hora/", data_views.hora, name="data-hora"),
    path("data/runs/<int:run_id>/energy/", data_views.energy, name="data-energy"),
    path("data/runs/<int:run_id>/edge/", data_views.edge, name="data-edge"),
    path("data/runs/<int:run_id>/heatmap/", data_views.heatmap, name="data-heatmap"),
    path("data/runs/<int:run_id>/recent/", data_views.recent, name="data-recent"),
    path("data/runs/<int:run_id>/savings/", savings_views.run_savings, name="data-savings"),
    # the run page's tools: downloads of each chart's data and of the audit trail, the worker's log lines
    path("data/runs/<int:run_id>/export/", exports.chart_export, name="data-export"),
    path("runs/<int:run_id>/audit/export/", exports.audit_export, name="audit-export"),
    path("data/runs/<int:run_id>/logs/", logs_views.logs, name="data-logs"),
    path("runs/<int:run_id>/logs/download/", logs_views.logs_download, name="logs-download"),
]
