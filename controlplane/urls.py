"""URL routes: the admin, the JSON API under /api/ (schema at /api/schema/), health and metrics
(/healthz, /readyz, /metrics: docs/operations.md), the dashboard at /."""

from django.contrib import admin
from django.urls import include, path

from controlplane.accounts.views import SignInView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("controlplane.api.urls")),
    path("", include("controlplane.operations.urls")),  # healthz, readyz, metrics (before the dashboard's routes)
    # The dashboard's sign-in (frontend:login, same path), with the sign-in throttle's 429 page.
    path("accounts/login/", SignInView.as_view(template_name="frontend/login.html", redirect_authenticated_user=True,
                                               next_page="frontend:runs"), name="login"),
    path("", include("frontend.urls")),
]

# Errors answer JSON under /api/ and /data/, a plain page elsewhere; a 500 shows only a request
# id (the traceback is logged under it). DEBUG=1 shows Django's debug pages instead (make demo only).
handler400 = "controlplane.api.exceptions.bad_request"
handler403 = "controlplane.api.exceptions.permission_denied"
handler404 = "controlplane.api.exceptions.page_not_found"
handler500 = "controlplane.api.exceptions.server_error"
