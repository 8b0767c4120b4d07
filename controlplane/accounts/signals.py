"""A password change revokes the user's API tokens.

Django already ends the user's other browser sessions (their session hash is derived from
the password hash). The change is seen on save: set_password() leaves the raw password in
``_password`` until the save, and set_unusable_password() makes the stored hash unusable. A
hasher upgrade on sign-in (check_password's setter) changes the hash but not the password,
and clears ``_password`` first: it revokes nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver
from rest_framework.authtoken.models import Token


@receiver(pre_save, sender=settings.AUTH_USER_MODEL)
def note_password_change(sender, instance, **kwargs) -> None:
    changed = getattr(instance, "_password", None) is not None
    if not changed and instance.pk is not None and not instance.has_usable_password():
        stored = sender.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
        changed = stored is not None and stored != instance.password
    instance._edgeplane_password_changed = changed


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def revoke_tokens_on_password_change(sender, instance, created: bool, **kwargs) -> None:
    if not created and getattr(instance, "_edgeplane_password_changed", False):
        Token.objects.filter(user=instance).delete()
    instance._edgeplane_password_changed = False
