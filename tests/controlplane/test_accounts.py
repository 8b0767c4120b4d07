"""Accounts: sign-in throttling and lockout (browser, API token, admin), API token lifetime and
revocation, password validation. Real database; sign-ins go through the real views."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import SetPasswordForm
from django.contrib.auth.hashers import MD5PasswordHasher
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from controlplane.accounts.models import SignInAttempt

ROOT = Path(__file__).resolve().parents[2]
TOKEN_URL = "/api/auth/token/"
LOGIN_URL = "/accounts/login/"


class CountingHasher(MD5PasswordHasher):
    """MD5, counting every password it checks: a refused sign-in must hash nothing."""

    algorithm = "counting_md5"
    verified = 0

    def verify(self, password, encoded):
        CountingHasher.verified += 1
        return super().verify(password, encoded)


@pytest.fixture(autouse=True)
def counting_hasher(settings):
    settings.PASSWORD_HASHERS = ["tests.controlplane.test_accounts.CountingHasher"]
    CountingHasher.verified = 0
    return CountingHasher


@pytest.fixture
def limits(settings):
    """Small limits, so that a test reaches them in a few requests."""
    settings.EDGEPLANE_SIGNIN_LOCKOUT_FAILURES = 3
    settings.EDGEPLANE_SIGNIN_LOCKOUT_SECONDS = 600
    settings.EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS = 50
    settings.EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS = 50
    settings.EDGEPLANE_SIGNIN_WINDOW_SECONDS = 60
    return settings


@pytest.fixture
def carol(db):
    return get_user_model().objects.create_user(username="carol", password="carol-long-passphrase")


def token_post(username: str, password: str, address: str = "10.0.0.1"):
    return APIClient(REMOTE_ADDR=address).post(TOKEN_URL, {"username": username, "password": password},
                                               format="json")


def browser_post(username: str, password: str, address: str = "10.0.0.1"):
    return Client(REMOTE_ADDR=address).post(LOGIN_URL, {"username": username, "password": password})


SIGN_INS = {"token": token_post, "browser": browser_post}


def assert_429(answer, *words: str) -> int:
    assert answer.status_code == 429, (answer.status_code, answer.content[:300])
    retry_after = int(answer["Retry-After"])
    assert retry_after > 0
    text = answer.content.decode()
    for word in words:
        assert word in text, (word, text[:500])
    return retry_after


# -- lockout after failures -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", SIGN_INS)
def test_failed_sign_ins_lock_the_username_even_for_the_right_password(endpoint, limits, carol):
    sign_in = SIGN_INS[endpoint]
    for _ in range(3):
        answer = sign_in("carol", "wrong-password")
        assert answer.status_code in (200, 400)  # the form again / the API's 400
    hashed = CountingHasher.verified
    # from another address too, and with the right password
    locked = sign_in("carol", "carol-long-passphrase", address="10.9.9.9")
    for _ in range(20):  # hammering stores nothing and does not move the end of the lockout
        assert sign_in("carol", "carol-long-passphrase").status_code == 429
    assert SignInAttempt.objects.filter(username="carol").count() == 3
    retry_after = assert_429(locked, "locked")
    assert 590 <= retry_after <= 600
    assert CountingHasher.verified == hashed, "a refused sign-in checked a password"
    # another user signs in from the same address
    other = get_user_model().objects.create_user(username="dave", password="dave-long-passphrase")
    assert sign_in(other.username, "dave-long-passphrase").status_code in (200, 302)


@pytest.mark.django_db
def test_the_lockout_is_shared_by_the_api_and_the_browser_and_ends_after_the_cooldown(limits, carol):
    for _ in range(3):
        assert token_post("carol", "wrong-password").status_code == 400
    page = browser_post("carol", "carol-long-passphrase")
    assert_429(page, "locked", "Sign in")  # the sign-in page, with the reason
    # the cooldown passes
    SignInAttempt.objects.update(at=timezone.now() - dt.timedelta(seconds=601))
    assert token_post("carol", "carol-long-passphrase").status_code == 200
    assert browser_post("carol", "carol-long-passphrase").status_code == 302


@pytest.mark.django_db
def test_a_success_resets_the_failure_count(limits, carol):
    for _ in range(2):
        token_post("carol", "wrong-password")
    assert token_post("carol", "carol-long-passphrase").status_code == 200
    for _ in range(2):
        token_post("carol", "wrong-password")
    assert token_post("carol", "carol-long-passphrase").status_code == 200


@pytest.mark.django_db
def test_an_unknown_username_is_locked_out_the_same_way(limits):
    for _ in range(3):
        assert token_post("nobody", "wrong-password").status_code == 400
    assert_429(token_post("nobody", "wrong-password"), "locked")


@pytest.mark.django_db
def test_the_username_is_matched_whatever_its_case(limits, carol):
    for name in ("carol", "Carol", "CAROL"):
        token_post(name, "wrong-password")
    assert_429(token_post("carol", "carol-long-passphrase"), "locked")


@pytest.mark.django_db
def test_the_admin_sign_in_is_throttled_too(limits, carol):
    carol.is_staff = True
    carol.save()
    client = Client(REMOTE_ADDR="10.0.0.3")
    for _ in range(3):
        assert client.post("/admin/login/", {"username": "carol", "password": "nope-nope"}).status_code == 200
    answer = client.post("/admin/login/", {"username": "carol", "password": "carol-long-passphrase"})
    assert_429(answer, "locked")


# -- rate limits per address and per username -------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("endpoint", SIGN_INS)
def test_one_address_gets_a_limited_number_of_attempts_per_window(endpoint, limits, carol):
    limits.EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS = 4
    sign_in = SIGN_INS[endpoint]
    for i in range(4):  # spraying usernames: no lockout, but the address's budget
        assert sign_in(f"user{i}", "some-password").status_code in (200, 400)
    hashed = CountingHasher.verified
    retry_after = assert_429(sign_in("carol", "carol-long-passphrase"), "from your address")
    assert 1 <= retry_after <= 60
    assert CountingHasher.verified == hashed
    # another address is not held back
    assert sign_in("carol", "carol-long-passphrase", address="10.0.0.2").status_code in (200, 302)
    # the window passes
    SignInAttempt.objects.update(at=timezone.now() - dt.timedelta(seconds=61))
    assert sign_in("carol", "carol-long-passphrase").status_code in (200, 302)


@pytest.mark.django_db
def test_one_username_gets_a_limited_number_of_attempts_per_window_from_any_address(limits, carol):
    limits.EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS = 3
    for i in range(3):
        assert token_post("carol", "carol-long-passphrase", address=f"10.1.0.{i}").status_code == 200
    assert_429(token_post("carol", "carol-long-passphrase", address="10.1.0.9"), "for this username")


@pytest.mark.django_db
def test_refused_attempts_do_not_extend_the_wait(limits, carol):
    limits.EDGEPLANE_SIGNIN_ADDRESS_ATTEMPTS = 2
    for _ in range(2):
        token_post("carol", "carol-long-passphrase")
    for _ in range(5):
        assert token_post("carol", "carol-long-passphrase").status_code == 429
    assert SignInAttempt.objects.count() == 2  # the refused ones are not kept
    SignInAttempt.objects.update(at=timezone.now() - dt.timedelta(seconds=61))
    assert token_post("carol", "carol-long-passphrase").status_code == 200


@pytest.mark.django_db
def test_the_default_limits_hold_a_burst_from_one_address(carol):
    answers = [token_post(f"spray{i}", "some-password").status_code for i in range(40)]
    assert 429 in answers and answers.index(429) <= 30


@pytest.mark.django_db(transaction=True)
def test_the_lockout_is_shared_between_processes(limits, carol, live_database_url):
    """Failures made by another process (another web worker) lock the username here."""
    script = textwrap.dedent("""
        import django
        django.setup()
        from django.contrib.auth import authenticate
        from django.test import RequestFactory
        for _ in range(3):
            assert authenticate(RequestFactory().post("/", REMOTE_ADDR="10.5.5.5"), username="carol",
                                password="wrong-password") is None
    """)
    env = {"DATABASE_URL": live_database_url, "DJANGO_SETTINGS_MODULE": "controlplane.settings",
           "EDGEPLANE_SIGNIN_LOCKOUT_FAILURES": "3", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "EDGEPLANE_VAR_DIR": str(ROOT / "var")}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_429(token_post("carol", "carol-long-passphrase"), "locked")


# -- API tokens: lifetime and revocation -----------------------------------------------------------------


def token_of(user) -> str:
    answer = APIClient().post(TOKEN_URL, {"username": user.username, "password": "carol-long-passphrase"},
                              format="json")
    assert answer.status_code == 200, answer.content
    return answer.json()["token"]


def api_get(token: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client.get("/api/runs/")


@pytest.mark.django_db
def test_a_token_answers_when_it_expires(settings, carol):
    settings.EDGEPLANE_API_TOKEN_DAYS = 30
    before = timezone.now()
    answer = APIClient().post(TOKEN_URL, {"username": "carol", "password": "carol-long-passphrase"}, format="json")
    expires = dt.datetime.fromisoformat(answer.json()["expires"])
    assert before + dt.timedelta(days=30) <= expires <= timezone.now() + dt.timedelta(days=30)


@pytest.mark.django_db
@pytest.mark.parametrize("days", [1, 30])
def test_an_expired_token_is_refused_with_401_saying_how_to_get_a_new_one(settings, carol, days):
    settings.EDGEPLANE_API_TOKEN_DAYS = days
    token = token_of(carol)
    assert api_get(token).status_code == 200
    Token.objects.filter(key=token).update(created=timezone.now() - dt.timedelta(days=days, seconds=1))
    answer = api_get(token)
    assert answer.status_code == 401
    detail = answer.json()["detail"]
    assert "expired" in detail and TOKEN_URL in detail
    # a new sign-in gives a new token, which works; the old one stays refused
    fresh = token_of(carol)
    assert fresh != token and api_get(fresh).status_code == 200 and api_get(token).status_code == 401


@pytest.mark.django_db
def test_a_token_just_inside_its_lifetime_still_works(settings, carol):
    settings.EDGEPLANE_API_TOKEN_DAYS = 30
    token = token_of(carol)
    Token.objects.filter(key=token).update(created=timezone.now() - dt.timedelta(days=29, hours=23))
    assert api_get(token).status_code == 200
    assert token_of(carol) == token  # asking again while it lasts gives the same token


@pytest.mark.django_db
def test_createteam_replaces_an_expired_token(settings):
    out = io.StringIO()
    call_command("createteam", "Lab", "--owner", "ada", "--password", "ada-long-passphrase", stdout=out)
    first = out.getvalue().split("token: ")[1].strip()
    Token.objects.filter(key=first).update(created=timezone.now() - dt.timedelta(days=31))
    out = io.StringIO()
    call_command("createteam", "Lab", "--owner", "ada", stdout=out)
    second = out.getvalue().split("token: ")[1].strip()
    assert second != first and api_get(second).status_code == 200


def change_password_by_set_password(user) -> None:
    user.set_password("a-brand-new-passphrase")
    user.save()


def change_password_by_form(user) -> None:
    form = SetPasswordForm(user, {"new_password1": "a-brand-new-passphrase",
                                  "new_password2": "a-brand-new-passphrase"})
    assert form.is_valid(), form.errors
    form.save()


def change_password_by_command(user) -> None:
    from unittest import mock

    with mock.patch("getpass.getpass", return_value="a-brand-new-passphrase"):
        call_command("changepassword", user.username, stdout=io.StringIO())


def make_password_unusable(user) -> None:
    user.set_unusable_password()
    user.save()


CHANGES = [change_password_by_set_password, change_password_by_form, change_password_by_command,
           make_password_unusable]


@pytest.mark.django_db
@pytest.mark.parametrize("change", CHANGES, ids=lambda f: f.__name__)
def test_a_password_change_revokes_the_users_tokens_and_other_sessions(change, carol):
    token = token_of(carol)
    other = get_user_model().objects.create_user(username="erin", password="erin-long-passphrase")
    other_token = Token.objects.create(user=other).key
    browser = Client()
    browser.force_login(carol)
    assert browser.get("/").status_code == 200

    change(get_user_model().objects.get(pk=carol.pk))

    answer = api_get(token)
    assert answer.status_code == 401 and TOKEN_URL in answer.json()["detail"]
    assert api_get(other_token).status_code == 200  # only carol's
    assert browser.get("/").status_code == 302  # her session is over: back to sign in


@pytest.mark.django_db
def test_saving_the_user_without_a_password_change_keeps_the_token(carol):
    token = token_of(carol)
    user = get_user_model().objects.get(pk=carol.pk)
    user.first_name = "Carol"
    user.save()
    assert api_get(token).status_code == 200


@pytest.mark.django_db
def test_a_hasher_upgrade_at_sign_in_keeps_the_token(settings, carol):
    token = token_of(carol)
    # a newer preferred hasher: the next sign-in re-hashes the same password
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher",
                                 "tests.controlplane.test_accounts.CountingHasher"]
    stored = get_user_model().objects.get(pk=carol.pk).password
    assert token_of(carol) == token
    assert get_user_model().objects.get(pk=carol.pk).password != stored  # it was re-hashed
    assert api_get(token).status_code == 200


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
def test_changepassword_refuses_a_weak_password(carol):
    from unittest import mock

    with mock.patch("getpass.getpass", return_value="a"), pytest.raises(CommandError, match="Aborting"):
        call_command("changepassword", "carol", stdout=io.StringIO(), stderr=io.StringIO())
    assert get_user_model().objects.get(username="carol").check_password("carol-long-passphrase")


@pytest.mark.django_db
def test_the_admin_refuses_a_weak_password_for_a_new_user():
    admin = get_user_model().objects.create_superuser(username="root", password="root-long-passphrase")
    client = Client()
    client.force_login(admin)
    answer = client.post("/admin/auth/user/add/", {"username": "newbie", "usable_password": "true",
                                                   "password1": "a", "password2": "a"})
    assert answer.status_code == 200 and "too short" in answer.content.decode()
    assert not get_user_model().objects.filter(username="newbie").exists()


@pytest.mark.django_db
def test_the_demo_password_passes_the_validators():
    from controlplane.accounts.services import password_problems

    assert password_problems("edgeplane-demo", username="demo") == []


@pytest.mark.django_db(transaction=True)
def test_concurrent_sign_ins_never_pass_more_than_the_limit(limits, carol):
    """Each attempt is written before it is counted: racing sign-ins (own connections, as in
    separate web processes) let at most the limit through."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth import authenticate
    from django.db import connection
    from django.test import RequestFactory

    from controlplane.accounts.services import SignInThrottled

    limits.EDGEPLANE_SIGNIN_USERNAME_ATTEMPTS = 3

    def attempt(i: int) -> str:
        try:
            user = authenticate(RequestFactory().post("/", REMOTE_ADDR=f"10.7.0.{i}"), username="carol",
                                password="carol-long-passphrase")
            return "ok" if user else "wrong"
        except SignInThrottled:
            return "throttled"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    assert outcomes.count("ok") <= 3 and outcomes.count("throttled") >= 13, outcomes
