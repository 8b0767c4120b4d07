"""createsuperuser, with the password validators in --noinput mode too.

Django's own checks an interactive password but takes DJANGO_SUPERUSER_PASSWORD as it is; this
one refuses a password that fails settings.AUTH_PASSWORD_VALIDATORS, saying why. (It takes
precedence over django.contrib.auth's because controlplane.accounts is listed first.)
"""

from __future__ import annotations

import os

from django.contrib.auth.management.commands import createsuperuser
from django.core.management.base import CommandError

from controlplane.accounts.services import password_problems


class Command(createsuperuser.Command):
    def handle(self, *args, **options):
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        if not options["interactive"] and password is not None:
            username = options.get(self.UserModel.USERNAME_FIELD) or os.environ.get(
                "DJANGO_SUPERUSER_" + self.UserModel.USERNAME_FIELD.upper(), "")
            if problems := password_problems(password, username=username):
                raise CommandError(f"DJANGO_SUPERUSER_PASSWORD is refused: {' '.join(problems)} Choose another.")
        return super().handle(*args, **options)
