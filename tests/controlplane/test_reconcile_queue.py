"""The verl reconciler is sent to the verl queue only while verl runs are active.

That queue has a consumer only where a gpu-worker runs; a message sent every
EDGEPLANE_RECONCILE_SECONDS to a queue nobody reads would pile up in the broker (Redis here,
the filesystem broker of ``make demo``).
"""

from __future__ import annotations

import json

import pytest
import redis
from django.conf import settings

from controlplane.runs.models import Run, RunStatus
from controlplane.runs.services import VERL, run_create
from controlplane.runs.tasks import reconcile_runs

pytestmark = pytest.mark.django_db


def queued_task_names(client: redis.Redis) -> list[str]:
    return [json.loads(m)["headers"]["task"] for m in client.lrange(settings.EDGEPLANE_VERL_QUEUE, 0, -1)]


def test_the_verl_reconciler_is_sent_only_while_verl_runs_are_active(acme, enqueued, test_redis_url):
    from controlplane.datasets.services import dataset_import_builtin

    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete(settings.EDGEPLANE_VERL_QUEUE)
    reconcile_runs()  # no verl run: nothing for the verl queue
    assert queued_task_names(client) == []

    dataset = dataset_import_builtin(team=acme, task="add", n_train=8, n_test=2, name="add-tiny")
    run = run_create(team=acme, dataset=dataset, name="r", config={"steps": 2, "batch_size": 4, "group_size": 4})
    Run.objects.filter(pk=run.pk).update(engine=VERL, status=RunStatus.RUNNING)
    reconcile_runs()
    assert queued_task_names(client) == ["edgeplane.reconcile_verl_runs"]

    Run.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED)
    reconcile_runs()
    assert queued_task_names(client) == ["edgeplane.reconcile_verl_runs"]  # nothing more once it ended
    client.delete(settings.EDGEPLANE_VERL_QUEUE)
