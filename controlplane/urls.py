"""URL routes: the admin, the JSON API under /api/ (schema at /api/schema/), the dashboard at /."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("controlplane.api.urls")),
    path("", include("frontend.urls")),
]
