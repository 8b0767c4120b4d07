"""URL routes: the admin, and the JSON API under /api/ (schema at /api/schema/)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    # The dashboard (frontend) will live at /; until then the root opens the API explorer.
    path("", RedirectView.as_view(url="/api/docs/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/", include("controlplane.api.urls")),
]
