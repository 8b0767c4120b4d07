"""URL routes: the admin, the JSON API under /api/ (schema at /api/schema/), the dashboard at /."""

from django.contrib import admin
from django.urls import include, path

from controlplane.accounts.views import SignInView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("controlplane.api.urls")),
    # The dashboard's sign-in (frontend:login, same path), with the sign-in throttle's 429 page.
    path("accounts/login/", SignInView.as_view(template_name="frontend/login.html", redirect_authenticated_user=True,
                                               next_page="frontend:runs"), name="login"),
    path("", include("frontend.urls")),
]
