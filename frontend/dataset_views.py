"""Datasets in the browser: the current team's list, upload (JSONL, CSV, Parquet in verl's format,
through the same importer as the API and `import_dataset`), a preview of the first prompts, and
delete with a confirmation step.

Who may do what (the team's roles, controlplane/accounts/models.py):
- any member reads the list and previews (another team's dataset is a 404, as a missing id);
- a launcher or admin uploads;
- an admin deletes any of the team's datasets, a launcher only those they uploaded; viewers never.
A dataset that runs use is never deleted (their prompt pages, audit trail and relaunches read it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import membership_of, user_can
from controlplane.datasets.models import Dataset
from controlplane.datasets.selectors import dataset_for_user, dataset_preview, datasets_of_team
from controlplane.datasets.services import DatasetImportError, DatasetInUse, dataset_delete, dataset_import
from frontend.forms import refuse_malformed
from frontend.views import current_team, page
from workers.problems.dataset import MAX_ERRORS, SUFFIXES, DatasetLimits

NAME_MAX = Dataset._meta.get_field("name").max_length
FORM_FIELDS = ("name", "team")
FORMATS = {".jsonl": "JSONL", ".csv": "CSV", ".parquet": "Parquet"}
# Where a field missing from a row can be given (workers/problems/dataset.py reads each of these).
WHERE_GIVEN = {"ground_truth": "give the answer as reward_model.ground_truth, or a ground_truth or answer column",
               "prompt": "give the prompt as text, or as a chat list of role and content",
               "key": "give a key, or data_source and extra_info.index"}


def can_delete(user, dataset: Dataset) -> bool:
    """An admin of the dataset's team, or the launcher who uploaded it."""
    membership = membership_of(user, dataset.team_id)
    if membership is None:
        return False
    return membership.allows(Role.ADMIN) or (membership.allows(Role.LAUNCHER) and dataset.created_by_id == user.pk)


def upload_limits() -> dict[str, Any]:
    """What the upload form states: the file size, rows, prompt and answer lengths it takes."""
    limits = DatasetLimits.from_environ()
    return {"file": human_bytes(settings.EDGEPLANE_UPLOAD_MAX_BYTES), "max_rows": f"{limits.max_rows:,}",
            "prompt": human_bytes(limits.max_prompt_bytes), "answer": human_bytes(limits.max_answer_bytes),
            "formats": ", ".join(FORMATS[s] for s in SUFFIXES if s in FORMATS)}


def error_rows(errors: list[dict], filename: str) -> list[dict[str, str]]:
    """The importer's {row, field, message} in words: "line 3" of a JSONL file, "row 3" (the
    header not counted) of a CSV or Parquet file, "the file" for row 0 (a column missing, the
    file unreadable) and "the form" for the form's own fields. The field stays the column's
    name as the file spells it: that is what the user fixes."""
    unit = "line" if Path(filename).suffix.lower() in (".jsonl", ".json") else "row"
    rows = []
    for e in errors:
        if e["row"]:
            where = f"{unit} {e['row']}"
        else:
            where = "the form" if e["field"] in FORM_FIELDS else "the file"
        message = e["message"]
        if message == "missing" and e["field"] in WHERE_GIVEN:
            message = f"missing: {WHERE_GIVEN[e['field']]}"
        rows.append({"where": where, "field": "" if e["field"] == "file" else e["field"], "message": message})
    return rows


def human_bytes(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} bytes"


def _list(request: HttpRequest, team, *, status: int = 200, form: dict | None = None,
          errors: list[dict] | None = None, filename: str = "") -> HttpResponse:
    return page(request, "frontend/datasets.html", {
        "team": team, "datasets": datasets_of_team(team), "can_upload": user_can(request.user, team, Role.LAUNCHER),
        "limits": upload_limits(), "form": form or {}, "errors": errors or [], "filename": filename,
        "errors_capped": bool(errors) and len(errors) >= MAX_ERRORS, "name_max": NAME_MAX,
    }, status=status)


@csrf_exempt  # not exempt: a POST's CSRF check runs in _upload, once the gate is in place (it reads the form)
@login_required
@require_http_methods(["GET", "POST"])
def datasets(request: HttpRequest) -> HttpResponse:
    """GET: the list and the upload form. POST: an upload (a launcher or admin)."""
    if request.method == "POST":
        request.upload_gate = _upload_gate
        return _upload(request)
    return _datasets_list(request)


@refuse_malformed
def _datasets_list(request: HttpRequest) -> HttpResponse:
    team = current_team(request)
    if team is None:
        raise Http404("you belong to no team")
    return _list(request, team)


def _upload_gate(request: HttpRequest) -> None:
    """Checked by the upload handler (controlplane/api/parsers.py) before a byte of the file is
    kept: a viewer is refused without the file being stored anywhere."""
    team = current_team(request)
    if team is None or not user_can(request.user, team, Role.LAUNCHER):
        raise PermissionDenied("uploading a dataset needs the launcher role in the team")


@csrf_protect
@refuse_malformed
def _upload(request: HttpRequest) -> HttpResponse:
    team = current_team(request)
    _upload_gate(request)  # again: a form without a file reaches here without the handler's check
    posted = request.POST.get("team", "")
    if not posted:
        raise BadRequest("the upload names no team: upload from the Datasets page's form")
    if posted != team.slug:
        messages.error(request, "You switched team in another tab: check the team and upload again.")
        return redirect("frontend:datasets")
    upload = request.FILES.get("file")
    name = request.POST.get("name", "").strip()
    form = {"name": name}
    if upload is None:
        return _list(request, team, status=400, form=form,
                     errors=[{"where": "the form", "field": "file", "message": "choose a file to upload"}])
    name = name or Path(upload.name).stem  # the file's name when none is given
    form["name"] = name
    try:
        dataset = dataset_import(team=team, name=name, filename=upload.name, data=upload.read(), user=request.user)
    except DatasetImportError as exc:
        return _list(request, team, status=400, form=form, errors=error_rows(exc.errors, upload.name),
                     filename=upload.name)
    messages.success(request, f"Dataset {dataset.name} uploaded: {dataset.prompt_count:,} prompts.")
    return redirect("frontend:dataset", dataset_id=dataset.pk)


def _dataset_or_404(request: HttpRequest, dataset_id: int) -> Dataset:
    dataset = dataset_for_user(request.user, dataset_id)
    if dataset is None:
        raise Http404(f"no dataset {dataset_id} in your teams")
    return dataset


def _detail(request: HttpRequest, dataset: Dataset, *, problem: str | None = None, status: int = 200) -> HttpResponse:
    return page(request, "frontend/dataset.html", {
        "team": dataset.team, "dataset": dataset, "preview": dataset_preview(dataset),
        "can_delete": can_delete(request.user, dataset), "problem": problem,
    }, status=status)


@login_required
@refuse_malformed
@require_http_methods(["GET", "POST"])
def dataset_detail(request: HttpRequest, dataset_id: int) -> HttpResponse:
    """GET: the preview, with the delete button's confirmation step (a disclosure on the page, no
    script). POST ``action=delete``: delete, refused while runs use the dataset."""
    dataset = _dataset_or_404(request, dataset_id)
    if request.method == "GET":
        return _detail(request, dataset)
    action = request.POST.get("action", "")
    if action != "delete":
        raise BadRequest(f"unknown action {action!r}: the dataset page's form sends delete")
    if not can_delete(request.user, dataset):
        raise PermissionDenied("deleting a dataset needs the admin role in its team, or the launcher role and to "
                               "have uploaded it")
    try:
        dataset_delete(dataset=dataset, by=request.user)
    except DatasetInUse as exc:
        return _detail(request, dataset, problem=str(exc), status=409)
    messages.success(request, f"Dataset {dataset.name} deleted, with its {dataset.prompt_count:,} prompts.")
    return redirect("frontend:datasets")
