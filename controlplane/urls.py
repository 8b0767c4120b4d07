"""URL routes: the admin, and the JSON API under /api/ (schema at /api/schema/)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("controlplane.api.urls")),
]
