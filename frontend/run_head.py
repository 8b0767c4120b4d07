"""The run page head's lifecycle buttons and tags (the views in frontend/runs_views.py answer
them): what the user may do with this run, and why a stopped run cannot resume."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse

from controlplane.accounts.models import Role
from controlplane.accounts.selectors import user_can
from controlplane.runs.models import Run
from controlplane.runs.services import RESUMABLE, resume_refusal
from controlplane.runs.tags import TAG_MAX, TAGS_MAX


def head_context(request: HttpRequest, run: Run) -> dict[str, Any]:
    launcher = user_can(request.user, run.team_id, Role.LAUNCHER)
    refusal = resume_refusal(run)
    return {
        "can_relaunch": launcher, "tags_editable": launcher, "tags_max": TAGS_MAX, "tag_max": TAG_MAX,
        "can_resume": launcher and refusal is None,
        # a stopped run that cannot go on says why, beside the Relaunch button
        "resume_refusal": refusal if launcher and run.status in RESUMABLE else "",
        "clone_url": reverse("frontend:run-new") + f"?from={run.id}",
    }
