from __future__ import annotations

from django.db.models import QuerySet

from controlplane.datasets.models import Dataset, Prompt


def datasets_for_user(user) -> QuerySet[Dataset]:
    return Dataset.objects.filter(team__memberships__user=user).select_related("team").order_by("-created_at")


def prompt_by_key(dataset_id: int, key: str) -> Prompt | None:
    return Prompt.objects.filter(dataset_id=dataset_id, key=key).first()


def datasets_prompt_shape(dataset_ids) -> dict[int, tuple[float, int]]:
    """(mean characters of a training prompt as stored, held-out prompts) per dataset: what the
    launch forecast prices prompt length and evaluation with. One query for all of them."""
    from django.db.models import Avg, Count, Q, TextField
    from django.db.models.functions import Cast, Length

    rows = (Prompt.objects.filter(dataset_id__in=list(dataset_ids)).values("dataset_id")
            .annotate(chars=Avg(Length(Cast("prompt", output_field=TextField())), filter=~Q(split="test")),
                      held_out=Count("id", filter=Q(split="test"))))
    return {r["dataset_id"]: (float(r["chars"] or 0.0), int(r["held_out"])) for r in rows}
