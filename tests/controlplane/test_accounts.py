"""Accounts: password validation (and, below, sign-in throttling, API token lifetime and revocation).
Real database; commands run through call_command."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command


@pytest.fixture
def carol(db):
    return get_user_model().objects.create_user(username="carol", password="carol-long-passphrase")


# -- password validators ---------------------------------------------------------------------------------


@pytest.mark.parametrize("password", ["a", "short-pw", "123456789012345", "password1234", "adalovelace1"])
def test_the_validators_refuse_weak_passwords(password):
    with pytest.raises(ValidationError):
        validate_password(password, user=get_user_model()(username="adalovelace"))


@pytest.mark.django_db
@pytest.mark.parametrize(("password", "says"), [("a", "too short"), ("9876543210987", "entirely numeric"),
                                                ("password1234", "too common"),
                                                ("ada-lovelace-1", "too similar")])
def test_createteam_refuses_a_weak_password_and_creates_nothing(password, says):
    with pytest.raises(CommandError, match=says) as refused:
        call_command("createteam", "Lab", "--owner", "ada-lovelace", "--password", password,
                     stdout=io.StringIO())
    assert "--password" in str(refused.value)
    assert not get_user_model().objects.filter(username="ada-lovelace").exists()


@pytest.mark.django_db
def test_createteam_does_not_touch_an_existing_users_password_when_it_refuses_one(carol):
    with pytest.raises(CommandError):
        call_command("createteam", "Lab", "--owner", "carol", "--password", "x", stdout=io.StringIO())
    assert get_user_model().objects.get(username="carol").check_password("carol-long-passphrase")


@pytest.mark.django_db
def test_createsuperuser_non_interactive_refuses_a_weak_password(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a")
    with pytest.raises(CommandError, match="too short"):
        call_command("createsuperuser", "--noinput", "--username", "root", "--email", "root@example.com",
                     stdout=io.StringIO())
    assert not get_user_model().objects.filter(username="root").exists()


@pytest.mark.django_db
def test_the_demo_password_passes_the_validators():
    from controlplane.accounts.services import password_problems

    assert password_problems("edgeplane-demo", username="demo") == []
