"""Routed for reverse() and for a stack without OperationsMiddleware, which answers them first."""

from django.urls import path

from controlplane.operations import views

app_name = "operations"
urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", views.metrics_view, name="metrics"),
]
