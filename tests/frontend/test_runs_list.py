"""The runs list: its shaping functions on their own, then the page and its live JSON through
Django's test client (sort, search, tag filter, ETA, elapsed time, who sees what), and the
lifecycle buttons (relaunch, resume, tags) with their roles."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import run_claim, run_create, run_tags_set
from controlplane.telemetry.models import StepSummary
from controlplane.telemetry.services import checkpoint_ingest, evaluation_ingest, run_finished_ingest, step_ingest
from frontend import runs_list as shape
from tests.frontend.conftest import KEYS
from tests.frontend.helpers import CONFIG, step_record

T0 = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)


# -- shaping, no database ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "key", "descending"), [
    (None, "launched", True), ("", "launched", True), ("name", "name", False), ("-savings", "savings", True),
    ("pass1", "pass1", False), ("-elapsed", "elapsed", True), ("bogus", "launched", True),
    ("--name", "launched", True), ("-", "launched", True), (" device_hours ", "device_hours", False),
])
def test_the_sort_a_query_asks_for(raw, key, descending):
    sort = shape.sort_of(raw)
    assert (sort.key, sort.descending) == (key, descending)


def test_a_header_flips_its_own_column_and_starts_another_in_its_natural_direction():
    by_name = shape.sort_of("name")
    assert by_name.header("name") == {"key": "name", "label": "Run", "param": "-name", "aria": "ascending"}
    assert shape.sort_of("-name").header("name")["param"] == "name"
    assert shape.sort_of("-name").header("name")["aria"] == "descending"
    assert by_name.header("savings") == {"key": "savings", "label": "Rollouts saved", "param": "-savings",
                                         "aria": "none"}
    assert by_name.header("status")["param"] == "status"


def test_the_pace_is_the_median_gap_between_recent_steps():
    times = [T0 + dt.timedelta(seconds=s) for s in (0, 10, 20, 30, 400, 410)]  # one long pause (an evaluation)
    assert shape.seconds_per_step(times) == 10
    assert shape.seconds_per_step(times[:1]) is None and shape.seconds_per_step([]) is None
    # only the last `limit` gaps count: an early slow phase is forgotten
    slow_then_fast = [T0 + dt.timedelta(seconds=100 * i) for i in range(10)]
    slow_then_fast += [slow_then_fast[-1] + dt.timedelta(seconds=5 * i) for i in range(1, 25)]
    assert shape.seconds_per_step(slow_then_fast) == 5


@pytest.mark.parametrize(("gaps", "left", "eta"), [
    ([30, 30, 30], 14, 420.0), ([10, 50, 20], 3, 60.0), ([10], 0, 0.0), ([], 5, None), ([7, 9], 1, 8.0),
])
def test_the_eta_is_steps_left_times_the_recent_pace(gaps, left, eta):
    times, at = [T0], T0
    for gap in gaps:
        at += dt.timedelta(seconds=gap)
        times.append(at)
    assert shape.eta_seconds(times, left) == eta


@pytest.mark.parametrize(("seconds", "words"), [
    (None, "–"), (0, "0 s"), (44.6, "45 s"), (59, "59 s"), (60, "1 min"), (720, "12 min"), (3599, "60 min"),
    (3725, "1 h 02 min"), (86399, "23 h 59 min"), (2 * 86400 + 4 * 3600 + 5, "2 d 4 h"), (-3, "0 s"),
])
def test_durations_in_words(seconds, words):
    assert shape.duration_words(seconds) == words


def test_the_eta_in_words_only_for_a_training_run():
    assert shape.eta_words(720, active=True) == "about 12 min left"
    assert shape.eta_words(720, active=False) == "–"
    assert shape.eta_words(None, active=True) == "–"
    assert shape.eta_words(0.2, active=True) == "finishing"


def test_elapsed_runs_from_the_start_to_the_end_or_now():
    assert shape.elapsed_seconds(None, None, T0) is None
    assert shape.elapsed_seconds(T0, None, T0 + dt.timedelta(minutes=5)) == 300
    assert shape.elapsed_seconds(T0, T0 + dt.timedelta(seconds=90), T0 + dt.timedelta(days=3)) == 90


# -- the page and its JSON -----------------------------------------------------------------------------------

def launch(acme, dataset, name: str, *, steps_trained: int = 0, planned: int = 20, tags=None, ended: str = "",
           pass_at_1: float | None = None, generated_keys: int = 4) -> Run:
    bob = get_user_model().objects.get(username="bob")
    run = run_create(team=acme, dataset=dataset, name=name, config={**CONFIG, "steps": planned}, user=bob, tags=tags)
    if steps_trained or ended:
        run_claim(run_id=run.id, worker="test:1")
    for step in range(steps_trained):
        step_ingest(run_id=run.id, record=step_record(step, KEYS[:generated_keys], skipped=KEYS[generated_keys:]))
    if pass_at_1 is not None:
        evaluation_ingest(run_id=run.id, record={"step": steps_trained, "k": 4, "pass_at_1": pass_at_1,
                                                 "pass_at_k": pass_at_1, "prompts": 4})
    if ended:
        run_finished_ingest(run_id=run.id, status=ended, reason="test", attempt=1)
    run.refresh_from_db()
    return run


def order(client, **query) -> list[str]:
    rows = client.get("/data/runs/", query).json()["runs"]
    return [Run.objects.get(pk=r["id"]).name for r in rows]


@pytest.fixture
def fleet(acme, dataset, enqueued):
    """Four runs of acme's with different names, progress, savings, Pass@1 and hours; one queued."""
    return {
        "alpha": launch(acme, dataset, "Alpha", steps_trained=2, generated_keys=2, pass_at_1=0.5, tags=["ablation"]),
        "bravo": launch(acme, dataset, "bravo", steps_trained=6, generated_keys=4, pass_at_1=0.2,
                        tags=["Ablation", "hive"]),
        "charlie": launch(acme, dataset, "Charlie run", steps_trained=4, generated_keys=6, tags=["baseline"]),
        "delta": launch(acme, dataset, "delta queued"),
    }


SORTED = [
    ("name", ["Alpha", "bravo", "Charlie run", "delta queued"]),  # any case
    ("-name", ["delta queued", "Charlie run", "bravo", "Alpha"]),
    ("-progress", ["bravo", "Charlie run", "Alpha", "delta queued"]),
    ("progress", ["delta queued", "Alpha", "Charlie run", "bravo"]),
    # 2 of 6 keys rolled out saves 67%, 4 of 6 33%, 6 of 6 none; a run without steps has no figure: last
    ("-savings", ["Alpha", "bravo", "Charlie run", "delta queued"]),
    ("savings", ["Charlie run", "bravo", "Alpha", "delta queued"]),
    ("-pass1", ["Alpha", "bravo", "delta queued", "Charlie run"]),  # no evaluation: last, newest first
    ("pass1", ["bravo", "Alpha", "delta queued", "Charlie run"]),
    ("-device_hours", ["bravo", "Charlie run", "Alpha", "delta queued"]),
    ("launched", ["Alpha", "bravo", "Charlie run", "delta queued"]),
    ("-launched", ["delta queued", "Charlie run", "bravo", "Alpha"]),
    ("status", ["delta queued", "Charlie run", "bravo", "Alpha"]),  # queued < running, ties newest first
    ("-status", ["Charlie run", "bravo", "Alpha", "delta queued"]),
]


@pytest.mark.django_db
def test_every_column_sorts_on_the_server(alice, fleet):
    for sort, expected in SORTED:  # one fleet for every case: each costs a query, not a setup
        assert order(alice, sort=sort) == expected, sort


@pytest.mark.django_db
def test_elapsed_sorts_runs_not_started_last(alice, fleet):
    now = timezone.now()
    Run.objects.filter(pk=fleet["alpha"].pk).update(started_at=now - dt.timedelta(hours=2))
    Run.objects.filter(pk=fleet["bravo"].pk).update(started_at=now - dt.timedelta(hours=9),
                                                    finished_at=now - dt.timedelta(hours=8))  # 1 h in all
    Run.objects.filter(pk=fleet["charlie"].pk).update(started_at=now - dt.timedelta(minutes=5))
    assert order(alice, sort="-elapsed") == ["Alpha", "bravo", "Charlie run", "delta queued"]
    assert order(alice, sort="elapsed") == ["Charlie run", "bravo", "Alpha", "delta queued"]
    rows = {r["id"]: r for r in alice.get("/data/runs/").json()["runs"]}
    assert rows[fleet["bravo"].pk]["elapsed"] == "1 h 00 min"
    assert rows[fleet["alpha"].pk]["elapsed"].startswith("2 h 0")
    assert rows[fleet["delta"].pk]["elapsed"] == "–"


@pytest.mark.django_db
def test_the_page_marks_the_sorted_header_and_keeps_every_filter_in_its_links(alice, fleet, dataset):
    page = alice.get("/", {"sort": "-savings", "q": "a", "tag": "ablation", "dataset": dataset.id}).content.decode()
    assert 'aria-sort="descending" class="sortable num" title="rollouts saved' in page
    assert page.count('aria-sort="none"') == 7
    # the savings header flips the direction and keeps the search, tag and dataset
    assert f'href="?dataset={dataset.id}&amp;tag=ablation&amp;q=a&amp;sort=savings"' in page
    assert '<input type="hidden" name="sort" value="-savings">' in page
    assert 'value="a" placeholder="contains' in page


@pytest.mark.django_db
def test_search_by_name_is_a_case_insensitive_contains(alice, fleet):
    assert sorted(order(alice, q="RUN")) == ["Charlie run"]
    assert sorted(order(alice, q="a")) == ["Alpha", "Charlie run", "bravo", "delta queued"]
    assert sorted(order(alice, q="LT")) == ["delta queued"]
    assert order(alice, q="zzz") == []
    assert "No runs match these filters" in alice.get("/", {"q": "zzz"}).content.decode()
    assert order(alice, q="%") == [] and order(alice, q="_") == []  # no wildcard reaches SQL


@pytest.mark.django_db
def test_the_tag_filter_finds_runs_with_that_tag_in_any_case(alice, fleet):
    assert sorted(order(alice, tag="ablation")) == ["Alpha", "bravo"]
    assert order(alice, tag="ABLATION ") == order(alice, tag="ablation")
    assert order(alice, tag="abl") == []  # a whole tag, never a part of one
    assert order(alice, tag="hive") == ["bravo"]
    page = alice.get("/", {"tag": "not a tag!"}).content.decode()
    assert "is not a tag" in page and "No runs match" in page
    assert sorted(order(alice, tag="ablation", q="brav")) == ["bravo"]
    listing = alice.get("/").content.decode()
    assert '<a class="chip tag" href="?tag=ablation" title="runs tagged ablation">ablation</a>' in listing


@pytest.mark.django_db
def test_the_eta_comes_from_the_recent_pace_of_steps(alice, fleet):
    bravo = fleet["bravo"]  # 6 of 20 steps, running
    for step in range(6):  # they arrived 30 s apart
        StepSummary.objects.filter(run=bravo, step=step).update(created_at=T0 + dt.timedelta(seconds=30 * step))
    rows = {r["id"]: r for r in alice.get("/data/runs/").json()["runs"]}
    assert rows[bravo.pk]["eta"] == "about 7 min left"  # 14 steps x 30 s
    assert rows[fleet["delta"].pk]["eta"] == "–"  # queued: not computable
    assert "about 7 min left" in alice.get("/").content.decode()


@pytest.mark.django_db
def test_the_live_json_holds_each_rows_figures_and_says_whether_to_keep_polling(alice, fleet, acme, dataset):
    data = alice.get("/data/runs/").json()
    assert data["active"] is True and data["finished"] is False
    bravo = {r["id"]: r for r in data["runs"]}[fleet["bravo"].pk]
    assert bravo["status"] == "running" and bravo["steps_completed"] == 6 and bravo["progress_percent"] == 30.0
    assert bravo["savings"] == "33.3%" and "uniform GRPO" in bravo["savings_title"]
    assert bravo["pass1"] == "0.200" and bravo["pass1_step"] == 6 and bravo["device_hours"] == "0.0033"
    step_ingest(run_id=bravo["id"], record=step_record(6, KEYS[:4], skipped=KEYS[4:]))
    assert {r["id"]: r for r in alice.get("/data/runs/").json()["runs"]}[bravo["id"]]["steps_completed"] == 7
    done = alice.get("/data/runs/", {"status": "queued", "q": "nothing"}).json()
    assert done == {"active": False, "finished": True, "runs": []}
    for run in fleet.values():  # every run ends: the list stops polling
        if run.status in (RunStatus.RUNNING, RunStatus.STARTING):
            run_finished_ingest(run_id=run.id, status="succeeded", reason="test")
        else:
            Run.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED)
    assert alice.get("/data/runs/").json()["active"] is False


@pytest.mark.django_db
def test_another_teams_runs_are_never_in_the_list_nor_its_json(alice, mallory, fleet, globex, enqueued):
    from controlplane.accounts.services import membership_set
    from controlplane.datasets.services import dataset_import_builtin

    theirs = dataset_import_builtin(team=globex, task="add", n_train=6, n_test=2, name="theirs")
    secret = run_create(team=globex, dataset=theirs, name="globex secret", config=dict(CONFIG), tags=["ablation"])
    assert secret.pk not in {r["id"] for r in alice.get("/data/runs/", {"tag": "ablation"}).json()["runs"]}
    assert "globex secret" not in alice.get("/", {"q": "secret"}).content.decode()
    assert [r["id"] for r in mallory.get("/data/runs/").json()["runs"]] == [secret.pk]
    # a member of both teams sees the current team's runs only
    membership_set(team=globex, username="alice", role="viewer")
    assert secret.pk not in {r["id"] for r in alice.get("/data/runs/").json()["runs"]}
    alice.post("/team/", {"team": "globex", "next": "/"})
    assert [r["id"] for r in alice.get("/data/runs/").json()["runs"]] == [secret.pk]
    assert alice.get("/data/runs/").status_code == 200
    from django.test import Client

    assert Client().get("/data/runs/").status_code == 302  # signed out: sign in first


@pytest.mark.django_db
def test_pages_follow_the_sort_and_filters_without_gaps_or_repeats(acme, dataset, enqueued):
    for i in range(5):
        launch(acme, dataset, f"page-{i}", tags=["p"])
    from frontend.runs_selectors import runs_page

    alice_user = get_user_model().objects.get(username="alice")
    first, more = runs_page(alice_user, team="acme", tag="p", sort=shape.sort_of("name"), per_page=2)
    second, _ = runs_page(alice_user, team="acme", tag="p", sort=shape.sort_of("name"), page=2, per_page=2)
    third, last_more = runs_page(alice_user, team="acme", tag="p", sort=shape.sort_of("name"), page=3, per_page=2)
    assert [r.name for r in first + second + third] == [f"page-{i}" for i in range(5)]
    assert more and not last_more


# -- tags ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "stored"), [
    (["Ablation", " hive ", "ablation"], ["ablation", "hive"]), ("a, b  c,,", ["a", "b", "c"]), ([], []),
    (None, []), (["paper.fig3", "v2-run_1"], ["paper.fig3", "v2-run_1"]), (["x" * 32], ["x" * 32]),
    ([f"t{i}" for i in range(16)], [f"t{i}" for i in range(16)]),
])
def test_tags_are_trimmed_lowercased_and_deduplicated(raw, stored):
    from controlplane.runs.tags import tags_clean

    assert tags_clean(raw) == stored


@pytest.mark.parametrize(("raw", "words"), [
    (["x" * 33], "is not a tag: use 1-32 letters"), (["two words"], "is not a tag"), ([""], "is not a tag"),
    (["ok", 5], "is not text"), ([f"t{i}" for i in range(17)], "at most 16"), ("tag", None), ({"a": 1}, "list"),
    (["naïve"], "is not a tag"), (["a/b"], "is not a tag"), (["\u200b"], "is not a tag"),
])
def test_a_tag_that_is_not_one_is_refused_with_what_is_allowed(raw, words):
    from controlplane.runs.tags import tags_clean
    from workers.engines.config import ConfigError

    if words is None:
        assert tags_clean(raw) == ["tag"]
        return
    with pytest.raises(ConfigError) as refused:
        tags_clean(raw)
    assert words in str(refused.value)


@pytest.mark.django_db
def test_a_launcher_edits_tags_on_the_run_page_and_a_viewer_or_another_team_may_not(bob, vera, mallory, run):
    assert "Add tags" in bob.get(f"/runs/{run.id}/").content.decode()
    assert "Add tags" not in vera.get(f"/runs/{run.id}/").content.decode()
    page = bob.post(f"/runs/{run.id}/tags/", {"tags": "Sweep-3, lr.1e-3"}, follow=True).content.decode()
    run.refresh_from_db()
    assert run.tags == ["sweep-3", "lr.1e-3"] and "Tags saved." in page and ">sweep-3</a>" in page
    bad = bob.post(f"/runs/{run.id}/tags/", {"tags": "fine no/slash"}, follow=True).content.decode()
    run.refresh_from_db()
    assert "Tags not saved" in bad and "no/slash" in bad and run.tags == ["sweep-3", "lr.1e-3"]
    assert vera.post(f"/runs/{run.id}/tags/", {"tags": "x"}).status_code == 403
    assert mallory.post(f"/runs/{run.id}/tags/", {"tags": "x"}).status_code == 404
    assert bob.get(f"/runs/{run.id}/tags/").status_code == 405
    run.refresh_from_db()
    assert run.tags == ["sweep-3", "lr.1e-3"]


# -- relaunch and resume through the buttons ---------------------------------------------------------------


@pytest.mark.django_db
def test_relaunch_from_the_button_makes_a_new_run_with_the_same_config_dataset_and_tags(
        bob, vera, mallory, run, enqueued, django_capture_on_commit_callbacks):
    run_tags_set(run=run, tags=["ablation"])
    page = bob.get(f"/runs/{run.id}/").content.decode()
    assert 'id="relaunch-form"' in page and f'href="/runs/new/?from={run.id}"' in page
    assert vera.post(f"/runs/{run.id}/relaunch/").status_code == 403
    assert mallory.post(f"/runs/{run.id}/relaunch/").status_code == 404
    assert 'id="relaunch-form"' not in vera.get(f"/runs/{run.id}/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = bob.post(f"/runs/{run.id}/relaunch/", follow=True)
    new = Run.objects.exclude(pk=run.pk).get()
    assert response.redirect_chain[-1][0] == f"/runs/{new.id}/"
    assert new.name == "edge-run (relaunch)" and new.config == run.config and new.dataset_id == run.dataset_id
    assert new.tags == ["ablation"] and new.status == RunStatus.QUEUED and enqueued[-1] == new.id
    assert f"with the config, dataset and tags of run {run.id}" in response.content.decode()
    listing = bob.get("/").content.decode()
    assert f'action="/runs/{run.id}/relaunch/"' in listing and f'href="/runs/new/?from={run.id}"' in listing


@pytest.mark.django_db
def test_the_relaunch_and_resume_posts_need_the_csrf_token(run):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    strict.force_login(get_user_model().objects.get(username="bob"))
    for action in ("relaunch", "resume", "tags"):
        assert strict.post(f"/runs/{run.id}/{action}/").status_code == 403
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_resume_from_the_run_page_when_it_stopped_with_a_checkpoint(bob, vera, run, enqueued,
                                                                    django_capture_on_commit_callbacks):
    checkpoint_ingest(run_id=run.id, step=4, attempt=1)
    page = bob.get(f"/runs/{run.id}/").content.decode()
    assert 'id="resume-form"' not in page  # running: nothing to resume
    run_finished_ingest(run_id=run.id, status="cancelled", reason="cancelled on request after step 6", attempt=1)
    page = bob.get(f"/runs/{run.id}/").content.decode()
    assert "Resume from step 4" in page
    assert "Resume from step 4" not in vera.get(f"/runs/{run.id}/").content.decode()
    assert vera.post(f"/runs/{run.id}/resume/").status_code == 403
    assert "Resume from checkpoint" in bob.get("/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = bob.post(f"/runs/{run.id}/resume/", follow=True).content.decode()
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.steps_completed == 4 and enqueued[-1] == run.id
    assert "queued to go on from its checkpoint at step 4 of 20" in response
    again = bob.post(f"/runs/{run.id}/resume/", follow=True).content.decode()
    assert "Not resumed: run" in again and "is queued" in again


@pytest.mark.django_db
def test_a_stopped_run_without_a_checkpoint_says_why_it_cannot_resume(bob, acme, dataset, enqueued):
    early = launch(acme, dataset, "early", steps_trained=2, ended="failed")
    page = bob.get(f"/runs/{early.id}/").content.decode()
    assert 'id="resume-form"' not in page
    assert "Cannot resume: run" in page and "no checkpoint to resume from" in page and "relaunch it" in page
    response = bob.post(f"/runs/{early.id}/resume/", follow=True).content.decode()
    assert "Not resumed" in response and "no checkpoint" in response
    early.refresh_from_db()
    assert early.status == RunStatus.FAILED

