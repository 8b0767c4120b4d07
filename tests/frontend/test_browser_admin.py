"""Datasets and team admin in a real browser (Playwright, Debian's Chromium), one walk end to
end as a team's admin: a malformed upload says where, a good one opens its preview, delete
asks first; then add a member, change their role, set a monthly budget. Screenshots:
tests/artifacts/datasets.png (the preview), datasets_refused.png (the refused upload),
team_admin.png (the team page after the changes)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model

from controlplane.accounts.models import Membership, Role
from controlplane.budgets.models import Budget
from controlplane.datasets.models import Dataset
from tests.frontend.test_browser import browser, live_run, tab  # noqa: F401 - fixtures

pytest.importorskip("playwright.sync_api", reason="needs the playwright package (dev extra)")

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SYSTEM = {"role": "system", "content": "Answer with a number."}
ROWS = [{"prompt": [SYSTEM, {"role": "user", "content": f"{a} + {b} = ?"}],
         "reward_model": {"ground_truth": str(a + b)}, "data_source": "sums", "extra_info": {"index": i},
         "difficulty": "easy" if a + b < 10 else "hard", "split": "test" if i % 4 == 3 else "train"}
        for i, (a, b) in enumerate([(1, 2), (3, 4), (12, 30), (7, 8), (5, 5), (40, 2), (9, 1), (2, 2)])]


def test_upload_preview_delete_then_add_a_member_change_their_role_and_set_a_budget(tab, acme, dataset,  # noqa: F811
                                                                                   tmp_path):
    get_user_model().objects.create_user(username="carol", password="carol-pw")
    run = live_run(acme, dataset, steps=3)  # observes edgeplane/add:4-7 of the built-in dataset
    bad, good = tmp_path / "sums.jsonl", tmp_path / "sums-ok.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "5 + 6 = ?", "data_source": "sums", '
                   '"extra_info": {"index": 99}}\n')
    good.write_text("".join(json.dumps(r) + "\n" for r in ROWS))

    tab.sign_in("alice", "alice-pw")
    tab.page.click("nav >> text=Datasets")
    tab.page.wait_for_url(tab.base + "/datasets/")
    # a malformed file: refused whole, the line and the problem said, nothing stored
    tab.page.set_input_files("input[name=file]", str(bad))
    tab.page.fill("input[name=name]", "sums")
    tab.page.click("button:has-text('Upload')")
    errors = tab.page.locator(".upload-errors")
    assert "sums.jsonl was not uploaded: 1 problem" in errors.inner_text()
    assert "line 2" in errors.locator("td").first.inner_text()
    assert not Dataset.objects.filter(name="sums").exists()
    tab.shot("datasets_refused")

    # the fixed file: stored, and its preview opens
    tab.page.set_input_files("input[name=file]", str(good))
    tab.page.click("button:has-text('Upload')")
    tab.page.wait_for_url(f"{tab.base}/datasets/*/")
    assert "Dataset sums uploaded: 8 prompts." in tab.page.locator(".messages").inner_text()
    assert "6 for training, 2 held out for evaluation" in tab.page.locator(".tiles").inner_text()
    rows = tab.page.locator("table.preview tbody tr")
    assert rows.count() == 8
    first = rows.first.inner_text()
    assert "12 + 30" not in first and "1 + 2 = ?" in first and "easy" in first and "3" in first
    assert "Difficulty as the file gives it: easy (3), hard (5)." in tab.page.content()
    tab.shot("datasets")

    # delete asks first, then the list no longer has it
    confirm = tab.page.locator("details.confirm")
    assert not confirm.locator("button:has-text('Delete dataset')").is_visible()  # not one click away
    tab.page.click("summary:has-text('Delete…')")
    assert "Delete dataset sums? Its 8 prompts are deleted with it." in confirm.inner_text()
    confirm.locator("button:has-text('Delete dataset')").click()
    tab.page.wait_for_url(tab.base + "/datasets/")
    assert "Dataset sums deleted, with its 8 prompts." in tab.page.locator(".messages").inner_text()
    listed = tab.page.locator("table.datasets tbody").inner_text()
    assert "sums" not in listed and "add-small" in listed and "1 run" in listed
    assert not Dataset.objects.filter(name="sums").exists()

    # a dataset a run uses: its preview shows the pass rates the run learned, and delete is refused
    tab.page.click("text=add-small")
    learned = tab.page.locator("tr[data-key='edgeplane/add:5'] td").last.inner_text()
    assert learned.endswith("% (1 run)"), learned
    assert tab.page.locator("tr[data-key='edgeplane/add:0'] td").last.inner_text() == "–"
    tab.shot("dataset_learned")
    tab.page.click("summary:has-text('Delete…')")
    assert "1 run uses this dataset" in tab.page.locator("details.confirm").inner_text()
    assert tab.page.locator("button:has-text('Delete dataset')").count() == 0
    assert Dataset.objects.filter(pk=dataset.pk).exists() and run.dataset_id == dataset.pk

    # the team page: add carol as a viewer, make her a launcher, set this month's budget
    tab.page.click("nav >> text=Team")
    tab.page.wait_for_url(tab.base + "/teams/acme/")
    form = tab.page.locator("form.add-member")
    form.locator("input[name=username]").fill("carol")
    form.locator("select[name=role]").select_option("viewer")
    form.locator("button").click()
    tab.page.wait_for_url(tab.base + "/teams/acme/")
    assert "carol added to Acme as viewer." in tab.page.locator(".messages").inner_text()
    carol = tab.page.locator("tr[data-member='carol']")
    carol.locator("select[name=role]").select_option("launcher")
    carol.locator("button:has-text('Change role')").click()
    tab.page.wait_for_url(tab.base + "/teams/acme/")
    assert "carol is now launcher in Acme." in tab.page.locator(".messages").inner_text()
    assert Membership.objects.get(team=acme, user__username="carol").role == Role.LAUNCHER

    budget = tab.page.locator("form.set-budget")
    budget.locator("select[name=period]").select_option("month")
    budget.locator("input[name=limit]").fill("0")  # refused, said beside the form
    budget.locator("button").click()
    assert "the limit must be more than 0 device-hours" in tab.page.locator("#budgets").inner_text()
    budget.locator("input[name=limit]").fill("40")
    budget.locator("button").click()
    tab.page.wait_for_url(tab.base + "/teams/acme/")
    assert "Budget set: 40 device-hours" in tab.page.locator(".messages").inner_text()
    assert "current" in tab.page.locator("table.budgets tbody tr").first.inner_text()
    assert Budget.objects.get(team=acme).limit_device_hours == 40
    tab.shot("team_admin")

    # the budget page counts against it
    tab.page.click("text=Compute budget and use →")
    assert "of 40.0000" in tab.page.locator(".tiles").inner_text()
