from __future__ import annotations

from django.db.models import QuerySet

from controlplane.datasets.models import Dataset, Prompt


def datasets_for_user(user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(team__memberships__user=user).select_related("team").order_by("-created_at")


def prompt_by_key(dataset_id: int, key: str) -> Prompt | None:
    return Prompt.objects.filter(dataset_id=dataset_id, key=key).first()
