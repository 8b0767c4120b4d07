"""URL routes. Only the admin for now; pages and JSON endpoints arrive with their apps."""

from django.contrib import admin
from django.urls import path

urlpatterns = [
    path("admin/", admin.site.urls),
]
