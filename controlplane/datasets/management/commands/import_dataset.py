"""import_dataset --team SLUG --name NAME (FILE | --builtin TASK [--train N --test N --seed S])."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.accounts.models import Team
from controlplane.datasets.services import (
    DatasetImportError,
    dataset_import,
    dataset_import_builtin,
)

SHOWN_ERRORS = 20


def team_by_slug(slug: str) -> Team:
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        known = ", ".join(Team.objects.order_by("slug").values_list("slug", flat=True)[:10]) or "none yet"
        raise CommandError(f"no team {slug!r} (teams: {known}); create it with `manage.py createteam`")
    return team


def describe_errors(errors: list[dict]) -> str:
    lines = [f"  row {e['row']}, {e['field']}: {e['message']}" if e["row"] else f"  {e['field']}: {e['message']}"
             for e in errors[:SHOWN_ERRORS]]
    if len(errors) > SHOWN_ERRORS:
        lines.append(f"  ... and {len(errors) - SHOWN_ERRORS} more")
    return "\n".join(lines)


class Command(BaseCommand):
    help = ("Import a dataset into a team: a JSONL, CSV or Parquet file in verl's format, or a built-in "
            "task (--builtin add). All or nothing: a file with any bad row stores nothing. Prints the "
            "dataset's id, name and prompt count.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("file", nargs="?", help="dataset file (.jsonl, .json, .csv, .parquet)")
        parser.add_argument("--team", required=True, help="the team's slug")
        parser.add_argument("--name", help="dataset name, unique in the team (default: the file's stem, "
                                           "or TASK-SEED for a built-in task)")
        parser.add_argument("--builtin", metavar="TASK", help="a built-in task instead of a file, e.g. add")
        parser.add_argument("--train", type=int, default=2000, help="built-in task: training prompts")
        parser.add_argument("--test", type=int, default=200, help="built-in task: held-out prompts")
        parser.add_argument("--seed", type=int, default=0, help="built-in task: which prompts are drawn")

    def handle(self, *args, file: str | None, team: str, name: str | None, builtin: str | None, train: int,
               test: int, seed: int, **options) -> None:
        if bool(file) == bool(builtin):
            raise CommandError("give either a FILE or --builtin TASK (exactly one)")
        target = team_by_slug(team)
        try:
            if builtin:
                try:
                    dataset = dataset_import_builtin(team=target, task=builtin, seed=seed, n_train=train,
                                                     n_test=test, name=name)
                except ValueError as exc:
                    if isinstance(exc, DatasetImportError):
                        raise
                    raise CommandError(f"--builtin {builtin}: {exc}") from exc
            else:
                path = Path(file)
                if not path.is_file():
                    raise CommandError(f"no file at {file!r}: give the path of a .jsonl, .csv or .parquet file")
                size, limit = path.stat().st_size, settings.EDGEPLANE_UPLOAD_MAX_BYTES
                if size > limit:
                    raise CommandError(f"{path.name} is {size} bytes, over EDGEPLANE_UPLOAD_MAX_BYTES ({limit})")
                dataset = dataset_import(team=target, name=name or path.stem, filename=path.name,
                                         data=path.read_bytes())
        except DatasetImportError as exc:
            raise CommandError(f"nothing imported; fix these and run again:\n{describe_errors(exc.errors)}") from exc
        self.stdout.write(f"dataset: {dataset.id}")
        self.stdout.write(f"name: {dataset.name}")
        self.stdout.write(f"prompts: {dataset.prompt_count}")
