"""The browser sign-in (routed in controlplane/urls.py): Django's LoginView that answers a
throttled attempt with the sign-in page, its reason, status 429 and Retry-After."""

from __future__ import annotations

from django.contrib.auth import views as auth_views

from controlplane.accounts.services import SignInThrottled


class SignInView(auth_views.LoginView):
    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except SignInThrottled as exc:
            form = self.get_form_class()(request, data=None)
            form.initial = {"username": request.POST.get("username", "")}
            response = self.render_to_response(self.get_context_data(form=form, throttled=exc.message))
            response.status_code = 429
            response["Retry-After"] = str(exc.retry_after)
            return response
