"""The datasets and team pages through Django's test client: who may read and write (viewer <
launcher < admin; another team's objects are 404s), CSRF on every write, malformed uploads of
each format answered with the importer's message and its line or row, and nothing written."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone

from controlplane.accounts.models import Membership, Role
from controlplane.budgets.models import Budget
from controlplane.datasets.models import Dataset, Prompt
from controlplane.datasets.services import dataset_import
from tests.frontend.conftest import client_for

pytestmark = pytest.mark.django_db

GOOD_JSONL = b'{"key": "k1", "prompt": "2+2?", "answer": "4", "difficulty": "easy"}\n' \
             b'{"key": "k2", "prompt": [{"role": "user", "content": "3+3?"}], "reward_model": {"ground_truth": "6"}}\n'


def upload(client: Client, filename: str, data: bytes, *, name: str = "", team: str = "acme"):
    return client.post("/datasets/", {"team": team, "name": name,
                                             "file": SimpleUploadedFile(filename, data)})


def parquet(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def set_budget(client: Client, period: str, day: str, limit: str):
    return client.post("/teams/acme/", {"action": "set_budget", "period": period, "day": day, "limit": limit})


def role(client: Client, membership, value: str):
    return client.post(f"/teams/acme/members/{membership.id}/", {"action": "role", "role": value})


def remove(client: Client, membership):
    return client.post(f"/teams/acme/members/{membership.id}/", {"action": "remove"})


def stored() -> tuple[int, int]:
    return Dataset.objects.count(), Prompt.objects.count()


# -- datasets: list, upload --------------------------------------------------------------------------------------


def test_the_list_shows_the_current_teams_datasets_with_counts_and_runs(alice, mallory, run, dataset):
    page = alice.get("/datasets/").content.decode()
    assert "add-small" in page and "built-in task" in page
    assert ">12<" in page and ">4<" in page  # training and held-out prompts
    assert f'href="/?dataset={dataset.id}">1 run<' in page
    assert 'href="/datasets/"' in page and 'href="/teams/acme/"' in page  # the nav links
    assert "add-small" not in mallory.get("/datasets/").content.decode()


def test_a_launcher_uploads_each_format_and_lands_on_its_preview(bob, acme):
    response = upload(bob, "mine.jsonl", GOOD_JSONL, name="mine")
    dataset = Dataset.objects.get(team=acme, name="mine")
    assert response.status_code == 302 and response["Location"] == f"/datasets/{dataset.id}/"
    assert dataset.created_by.username == "bob" and dataset.prompt_count == 2
    page = bob.get(response["Location"]).content.decode()
    assert "2+2?" in page and "3+3?" in page and "easy" in page and "Delete" in page
    csv = b"key,prompt,ground_truth\nc1,1+1?,2\n"
    assert upload(bob, "table.csv", csv).status_code == 302  # no name given: the file's
    assert Dataset.objects.get(team=acme, name="table").prompt_count == 1
    assert upload(bob, "p.parquet", parquet([{"key": "p1", "prompt": "5+5?", "answer": "10"}])).status_code == 302
    assert Prompt.objects.get(dataset__name="p", key="p1").ground_truth == "10"


@pytest.mark.parametrize(("filename", "data", "where", "says"), [
    ("bad.jsonl", b'{"key": "a", "prompt": "x", "answer": "1"}\n{"key": "b", "prompt": "y"\n', "line 2", "JSON"),
    ("bad.jsonl", b'{"key": "a", "prompt": "x", "answer": "1"}\n\n{"key": "c", "prompt": "z"}\n', "line 3", "answer"),
    ("bad.csv", b"key,prompt,ground_truth\na,x,1\nb,y,\n", "row 2", "missing: give the answer as reward_model"),
    ("bad.csv", b"name,question\nn,x\n", "the file", "missing column (columns are: name, question)"),
    ("bad.parquet", b"PAR1 this is not parquet at all", "the file", "Parquet"),
    ("bad.parquet", parquet([{"key": "a", "prompt": "x", "answer": "1"}, {"key": "b", "prompt": "y", "answer": None}]),
     "row 2", "answer"),
    ("empty.jsonl", b"\n", "the file", "empty"),
    ("notes.txt", b"hello", "the file", "unknown format"),
])
def test_a_malformed_file_of_each_format_says_where_and_writes_nothing(bob, filename, data, where, says):
    before = stored()
    response = upload(bob, filename, data, name="broken")
    page = response.content.decode()
    assert response.status_code == 400
    assert f"{filename} was not uploaded" in page and f"<td>{where}</td>" in page
    assert says.lower() in page.lower()
    assert stored() == before and not Dataset.objects.filter(name="broken").exists()
    assert 'value="broken"' in page  # the form keeps what was typed


def test_upload_refusals_name_the_problem(bob, dataset):
    page = upload(bob, "x.jsonl", GOOD_JSONL, name="add-small").content.decode()
    assert "already has a dataset named &#x27;add-small&#x27;" in page
    response = bob.post("/datasets/", {"team": "acme", "name": "nofile"})
    assert response.status_code == 400 and "choose a file to upload" in response.content.decode()
    assert upload(bob, "x.jsonl", GOOD_JSONL, name="n" * 201).status_code == 400
    response = bob.post("/datasets/", {"name": "noteam", "file": SimpleUploadedFile("t.jsonl", GOOD_JSONL)})
    assert response.status_code == 400 and "names no team" in response.content.decode()
    assert not Dataset.objects.filter(name__in=["nofile", "x", "noteam"]).exists()


def test_an_upload_over_the_size_limit_is_refused_with_the_limit(bob, settings):
    settings.EDGEPLANE_UPLOAD_MAX_BYTES = 64
    response = upload(bob, "big.jsonl", GOOD_JSONL * 4, name="big")
    assert response.status_code == 413 and "64 bytes" in response.content.decode()
    assert not Dataset.objects.filter(name="big").exists()
    assert "Limits: 64 bytes a file" in bob.get("/datasets/").content.decode()  # the form states the limit
    settings.EDGEPLANE_UPLOAD_MAX_BYTES = 50 * 2**20
    assert "Limits: 50 MiB a file, 1,000,000 rows, 32 KiB a prompt, 4 KiB an answer" in " ".join(
        bob.get("/datasets/").content.decode().split())


def test_a_viewer_reads_but_may_not_upload_and_a_stranger_uploads_nowhere(vera, mallory, dataset):
    page = vera.get("/datasets/").content.decode()
    assert "add-small" in page and "needs the launcher role" in page and 'name="file"' not in page
    before = stored()
    assert upload(vera, "mine.jsonl", GOOD_JSONL, name="mine").status_code == 403
    assert upload(mallory, "mine.jsonl", GOOD_JSONL, name="mine", team="globex").status_code == 302  # her own team
    assert Dataset.objects.get(name="mine").team.slug == "globex" and stored()[0] == before[0] + 1
    assert Client().post("/datasets/", {"team": "acme"}).status_code == 302  # to sign in


def test_the_form_names_its_team_so_a_switch_in_another_tab_uploads_nothing(alice, globex):
    from controlplane.accounts.services import membership_set

    membership_set(team=globex, username="alice", role="launcher")
    alice.post("/team/", {"team": "globex"})
    response = upload(alice, "mine.jsonl", GOOD_JSONL, name="mine", team="acme")
    assert response.status_code == 302 and not Dataset.objects.filter(name="mine").exists()


# -- datasets: preview, delete -----------------------------------------------------------------------------------


def test_the_preview_shows_the_first_rows_and_another_teams_dataset_is_404(alice, mallory, run, dataset):
    page = alice.get(f"/datasets/{dataset.id}/").content.decode()
    assert "First 16 of 16 prompts" in page and "12 for training, 4 held out" in page
    assert "edgeplane/add:4" in page and "edge-run" in page
    # the run observed edgeplane/add:4-7: their learned pass rates show, the others' a dash
    assert page.count("% <small class=\"muted\">(1 run)</small>") == 4
    row = page[page.index('data-key="edgeplane/add:0"'):]
    assert row[:row.index("</tr>")].rstrip().endswith("<td class=\"num\">–</td>")
    assert mallory.get(f"/datasets/{dataset.id}/").status_code == 404
    assert alice.get("/datasets/999999/").status_code == 404


def delete(client: Client, dataset):
    return client.post(f"/datasets/{dataset.id}/", {"action": "delete"})


def test_who_may_delete_admin_any_launcher_their_own_viewer_none(alice, bob, vera, mallory, acme, dataset):
    bobs = dataset_import(team=acme, name="bobs", filename="b.jsonl", data=GOOD_JSONL,
                          user=get_user_model().objects.get(username="bob"))
    for client, target, code in ((vera, bobs, 403), (bob, dataset, 403), (mallory, bobs, 404)):
        assert delete(client, target).status_code == code
    for client, target in ((vera, bobs), (bob, dataset)):  # no delete button where it would be refused
        assert "Delete…" not in client.get(f"/datasets/{target.id}/").content.decode()
    preview = bob.get(f"/datasets/{bobs.id}/").content.decode()  # the confirmation step, on the page
    assert "Delete dataset bobs?" in preview and "2 prompts are deleted with it" in preview
    assert 'value="delete"' in preview and ">Delete dataset<" in preview
    assert Dataset.objects.filter(pk=bobs.pk).exists()  # asking is not deleting
    assert bob.post(f"/datasets/{bobs.id}/", {"action": "erase"}).status_code == 400  # not the page's form
    response = delete(bob, bobs)
    assert response.status_code == 302 and response["Location"] == "/datasets/"
    assert not Dataset.objects.filter(pk=bobs.pk).exists() and not Prompt.objects.filter(dataset_id=bobs.pk).exists()
    response = delete(alice, dataset)  # an admin: any of the team's
    assert response.status_code == 302 and not Dataset.objects.filter(pk=dataset.pk).exists()


def test_a_dataset_a_run_uses_is_not_deleted_and_the_page_says_why(alice, run, dataset):
    preview = alice.get(f"/datasets/{dataset.id}/").content.decode()
    assert "1 run uses this dataset" in preview and ">Delete dataset<" not in preview
    response = delete(alice, dataset)
    assert response.status_code == 409 and "(edge-run)" in response.content.decode()
    assert Prompt.objects.filter(dataset=dataset).count() == 16


# -- CSRF on every write -------------------------------------------------------------------------------------------


def test_every_write_needs_the_csrf_token(acme, dataset):
    client = Client(enforce_csrf_checks=True)
    client.force_login(get_user_model().objects.get(username="alice"))
    alice = Membership.objects.get(team=acme, user__username="alice")
    posts = [("/datasets/", {"team": "acme", "name": "c", "file": SimpleUploadedFile("c.jsonl", GOOD_JSONL)}),
             (f"/datasets/{dataset.id}/", {"action": "delete"}),
             ("/teams/acme/", {"action": "add_member", "username": "mallory", "role": "viewer"}),
             (f"/teams/acme/members/{alice.id}/", {"action": "role", "role": "viewer"}),
             (f"/teams/acme/members/{alice.id}/", {"action": "remove"}),
             ("/teams/acme/", {"action": "set_budget", "period": "month", "day": "2030-01-01", "limit": "5"})]
    for url, data in posts:
        assert client.post(url, data).status_code == 403, url
    assert Dataset.objects.filter(pk=dataset.pk).exists() and not Dataset.objects.filter(name="c").exists()
    assert not Budget.objects.exists() and acme.memberships.count() == 3
    client.get("/datasets/")
    token = client.cookies["csrftoken"].value
    ok = client.post("/datasets/", {"team": "acme", "name": "c", "csrfmiddlewaretoken": token,
                                           "file": SimpleUploadedFile("c.jsonl", GOOD_JSONL)})
    assert ok.status_code == 302 and Dataset.objects.filter(name="c").exists()


# -- team page: members --------------------------------------------------------------------------------------------


def test_members_are_listed_to_everyone_and_only_admins_get_the_forms(alice, vera, bob):
    admin_page = alice.get("/teams/acme/").content.decode()
    assert 'value="add_member"' in admin_page and 'value="set_budget"' in admin_page
    assert "the last admin" in admin_page
    for client, role in ((vera, "viewer"), (bob, "launcher")):
        page = client.get("/teams/acme/").content.decode()
        assert all(name in page for name in ("alice", "bob", "vera")) and f"you are a {role}" in page
        assert 'name="action"' not in page and "Remove…" not in page  # no form of the admins'



def test_non_admins_get_403_on_every_write_and_other_teams_are_404(acme, globex, bob, vera, mallory, alice):
    alice_m = Membership.objects.get(team=acme, user__username="alice")
    mallory_m = Membership.objects.get(team=globex, user__username="mallory")
    writes = [("/teams/acme/", {"action": "add_member", "username": "mallory", "role": "admin"}),
              (f"/teams/acme/members/{alice_m.id}/", {"action": "role", "role": "viewer"}),
              (f"/teams/acme/members/{alice_m.id}/", {"action": "remove"}),
              ("/teams/acme/", {"action": "set_budget", "period": "month", "day": "2030-01-01", "limit": "5"})]
    for client in (bob, vera):
        for url, data in writes:
            assert client.post(url, data).status_code == 403, url
    for url, data in writes:
        assert mallory.post(url, data).status_code == 404, url  # not her team: as if it did not exist
    assert mallory.get("/teams/acme/").status_code == 404
    # alice, admin of acme, cannot reach globex's members through acme's address, nor globex's page
    assert role(alice, mallory_m, "viewer").status_code == 404
    assert remove(alice, mallory_m).status_code == 404
    assert alice.get("/teams/globex/").status_code == 404
    assert Membership.objects.get(pk=mallory_m.pk).role == Role.ADMIN and acme.memberships.count() == 3
    assert not Budget.objects.exists()


def test_an_admin_adds_changes_and_removes_members_but_never_the_last_admin(alice, acme, globex):
    response = alice.post("/teams/acme/", {"action": "add_member", "username": "mallory", "role": "launcher"})
    assert response.status_code == 302
    assert Membership.objects.get(team=acme, user__username="mallory").role == Role.LAUNCHER
    page = alice.post("/teams/acme/", {"action": "add_member", "username": "ghost", "role": "viewer"})
    assert page.status_code == 400 and "no user named &#x27;ghost&#x27;" in page.content.decode()
    assert 'value="ghost"' in page.content.decode()
    alice_m = Membership.objects.get(team=acme, user__username="alice")
    refused = role(alice, alice_m, "viewer")
    assert refused.status_code == 400 and "last admin" in refused.content.decode()
    assert "Remove alice from Acme?" not in alice.get("/teams/acme/").content.decode()  # no button to refuse
    assert remove(alice, alice_m).status_code == 400
    vera_m = Membership.objects.get(team=acme, user__username="vera")
    assert role(alice, vera_m, "admin").status_code == 302
    assert role(alice, vera_m, "owner").status_code == 400
    assert "Remove vera from Acme?" in alice.get("/teams/acme/").content.decode()  # the confirmation step
    assert remove(alice, vera_m).status_code == 302
    assert not Membership.objects.filter(pk=vera_m.pk).exists()
    assert Membership.objects.get(team=globex, user__username="mallory").role == Role.ADMIN  # her own team untouched
    for url in ("/teams/acme/", f"/teams/acme/members/{alice_m.id}/"):  # a form this page never sends
        response = alice.post(url, {"action": "promote"})
        assert response.status_code == 400 and "unknown action &#x27;promote&#x27;" in response.content.decode()


def test_an_admin_who_steps_down_keeps_reading_and_one_who_leaves_goes_to_the_runs(alice, acme):
    bob_m = Membership.objects.get(team=acme, user__username="bob")
    role(alice, bob_m, "admin")
    alice_m = Membership.objects.get(team=acme, user__username="alice")
    assert role(alice, alice_m, "launcher").status_code == 302
    assert "you are a launcher" in alice.get("/teams/acme/").content.decode()
    assert remove(alice, alice_m).status_code == 403  # no longer an admin
    bob = client_for("bob")
    response = remove(bob, bob_m)
    assert response.status_code == 400  # bob is now the last admin
    assert role(bob, bob_m, "admin").status_code == 302  # unchanged
    # with a second admin again, bob may leave; he lands on the runs, the team page no longer his
    role(bob, alice_m, "admin")
    response = remove(bob, bob_m)
    assert response.status_code == 302 and response["Location"] == "/"
    assert bob.get("/teams/acme/").status_code == 404


# -- team page: budgets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("limit", "says"), [
    ("-1", "more than 0"), ("0", "more than 0"), ("", "like 12.5"), ("abc", "like 12.5"), ("nan", "number"),
    ("inf", "number"), ("1e30", "extra zero"), ("10000001", "extra zero"), ("0.00001", "smallest limit"),
])
def test_a_budget_limit_out_of_range_is_refused_with_what_to_type(alice, acme, limit, says):
    response = set_budget(alice, "month", timezone.now().date().isoformat(), limit)
    assert response.status_code == 400 and says in response.content.decode()
    assert f'value="{limit}"' in response.content.decode()
    assert not Budget.objects.exists()


def test_an_admin_sets_a_budget_per_period_then_changes_and_removes_it(alice, vera, acme):
    today = timezone.now().date()
    response = set_budget(alice, "week", today.isoformat(), "12.5")
    assert response.status_code == 302
    budget = Budget.objects.get(team=acme)
    assert budget.period_start == today - dt.timedelta(days=today.weekday()) and budget.limit_device_hours == 12.5
    assert (budget.period_end - budget.period_start).days == 7
    refused = set_budget(alice, "month", today.isoformat(), "40")
    assert refused.status_code == 400 and "overlaps" in refused.content.decode()
    for day in ("yesterday", "2026-02-30", "9999-12-31", ""):
        assert set_budget(alice, "day", day, "1").status_code == 400, day
    assert alice.post(f"/teams/acme/budgets/{budget.id}/", {"action": "limit", "limit": "30"}).status_code == 302
    assert Budget.objects.get(pk=budget.pk).limit_device_hours == 30
    assert alice.post(f"/teams/acme/budgets/{budget.id}/", {"action": "limit", "limit": "-3"}).status_code == 400
    assert vera.post(f"/teams/acme/budgets/{budget.id}/", {"action": "limit", "limit": "1"}).status_code == 403
    assert vera.post(f"/teams/acme/budgets/{budget.id}/", {"action": "remove"}).status_code == 403
    assert "30" in vera.get("/teams/acme/").content.decode()  # read-only, but shown
    assert "Remove this budget?" in alice.get("/teams/acme/").content.decode()  # the confirmation step
    assert alice.post(f"/teams/acme/budgets/{budget.id}/", {"action": "remove"}).status_code == 302
    assert not Budget.objects.exists()


def test_budgets_of_another_team_are_404_and_the_budget_page_links_the_team_page(alice, acme, globex):
    from controlplane.budgets.services import budget_set_period

    theirs = budget_set_period(team=globex, period="month", day=timezone.now().date(), limit_device_hours=5)
    assert alice.post(f"/teams/acme/budgets/{theirs.id}/", {"action": "limit", "limit": "1"}).status_code == 404
    assert alice.post(f"/teams/acme/budgets/{theirs.id}/", {"action": "remove"}).status_code == 404
    assert alice.post(f"/teams/globex/budgets/{theirs.id}/", {"action": "limit", "limit": "1"}).status_code == 404
    assert Budget.objects.get(pk=theirs.pk).limit_device_hours == 5
    assert 'href="/teams/acme/"' in alice.get("/teams/acme/budget/").content.decode()


def test_the_team_page_says_what_a_budget_does_and_where_a_single_run_is_capped(alice):
    page = alice.get("/teams/acme/").content.decode()
    assert "no budget for today" in page and "No budgets: the team's use has no limit." in page
    assert "max_device_hours" in page and "running runs stop" in page
