"""The Celery tasks live in the control plane and keep their names: the names are the wire
format, so messages queued before an upgrade still find their task, and routes follow them."""

from __future__ import annotations

from unittest import mock

import pytest

from controlplane.celery import app
from controlplane.runs.models import Run
from controlplane.runs.services import VERL, run_enqueue

TASK_NAMES = {"edgeplane.launch_run", "edgeplane.reconcile_runs", "edgeplane.launch_verl_run",
              "edgeplane.reconcile_verl_runs"}


def test_a_worker_finds_every_task_under_its_old_name_by_autodiscovery() -> None:
    app.loader.import_default_modules()  # what `celery -A controlplane worker` does at start
    assert TASK_NAMES <= set(app.tasks)
    assert app.tasks["edgeplane.launch_run"].__module__ == "controlplane.runs.tasks"
    assert app.tasks["edgeplane.launch_run"].acks_late and app.tasks["edgeplane.launch_verl_run"].acks_late


def test_the_verl_tasks_are_routed_to_the_verl_queue_by_name(settings) -> None:
    router = app.amqp.router
    for name in ("edgeplane.launch_verl_run", "edgeplane.reconcile_verl_runs"):
        assert router.route({}, name)["queue"].name == settings.EDGEPLANE_VERL_QUEUE
    assert router.route({}, "edgeplane.launch_run")["queue"].name != settings.EDGEPLANE_VERL_QUEUE


@pytest.mark.django_db
def test_a_run_is_enqueued_by_its_engines_task_name(acme) -> None:
    from controlplane.datasets.services import dataset_import_builtin

    dataset = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="add-tiny")
    local = Run.objects.create(team=acme, dataset=dataset, name="l", config={}, engine="local")
    verl = Run.objects.create(team=acme, dataset=dataset, name="v", config={}, engine=VERL)
    with mock.patch.object(app, "send_task") as send:
        run_enqueue(run_id=local.id)
        run_enqueue(run_id=verl.id)
    assert [c.args[0] for c in send.call_args_list] == ["edgeplane.launch_run", "edgeplane.launch_verl_run"]
    assert [c.kwargs["args"] for c in send.call_args_list] == [[local.id], [verl.id]]
