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


def datasets_of_team(team) -> list[Dataset]:
    """The team's datasets, newest first, each with ``train_prompts``, ``test_prompts`` (held out)
    and ``run_count`` (runs that use it) set: three queries for the whole list."""
    from django.db.models import Count, Q

    from controlplane.runs.models import Run

    datasets = list(Dataset.objects.filter(team=team).select_related("created_by").order_by("-created_at", "-id"))
    ids = [d.pk for d in datasets]
    splits = {r["dataset_id"]: r for r in Prompt.objects.filter(dataset_id__in=ids).values("dataset_id")
              .annotate(test=Count("id", filter=Q(split="test")), total=Count("id"))}
    runs = dict(Run.objects.filter(dataset_id__in=ids).values("dataset_id").annotate(n=Count("id"))
                .values_list("dataset_id", "n"))
    for d in datasets:
        row = splits.get(d.pk, {"test": 0, "total": 0})
        d.test_prompts, d.train_prompts = row["test"], row["total"] - row["test"]
        d.run_count = runs.get(d.pk, 0)
    return datasets


def dataset_for_user(user, dataset_id: int) -> Dataset | None:
    """One of the user's teams' datasets, or None (another team's is not found, as any missing id)."""
    return datasets_for_user(user).filter(pk=dataset_id).first()


PREVIEW_ROWS = 20


def dataset_preview(dataset: Dataset, limit: int = PREVIEW_ROWS) -> dict:
    """What the dataset page shows: its first ``limit`` prompts in file order, each with the pass
    rate runs learned for it (the mean over the runs that observed it, from their current prompt
    states; None when none did), and the counts: prompts per split and per difficulty."""
    from django.db.models import Avg, Count

    from controlplane.runs.models import Run
    from controlplane.telemetry.models import PromptState

    rows = list(Prompt.objects.filter(dataset=dataset).order_by("id")[:limit])
    learned = {r["prompt_key"]: r for r in PromptState.objects.filter(
        run__dataset=dataset, prompt_key__in=[p.key for p in rows], pass_rate__isnull=False)
        .values("prompt_key").annotate(pass_rate=Avg("pass_rate"), runs=Count("run_id", distinct=True))}
    splits: dict[str, int] = {}
    by_difficulty: dict[str, int] = {}
    for split, difficulty, n in (Prompt.objects.filter(dataset=dataset).values("split", "difficulty")
                                 .annotate(n=Count("id")).values_list("split", "difficulty", "n")):
        splits[split] = splits.get(split, 0) + n
        if difficulty:
            by_difficulty[difficulty] = by_difficulty.get(difficulty, 0) + n
    difficulties = sorted(by_difficulty.items())
    runs = Run.objects.filter(dataset=dataset)
    return {
        "rows": [{"prompt": p, "learned_pass_rate": learned.get(p.key, {}).get("pass_rate"),
                  "learned_runs": learned.get(p.key, {}).get("runs", 0)} for p in rows],
        "total": sum(splits.values()),
        "test": splits.get("test", 0),
        "train": sum(n for split, n in splits.items() if split != "test"),
        "difficulties": difficulties,
        "run_count": runs.count(),
        "runs": list(runs.order_by("-id")[:10]),
    }
