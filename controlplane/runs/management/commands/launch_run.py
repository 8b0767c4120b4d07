"""launch_run --team SLUG --dataset NAME --name NAME --config FILE.yaml: queue a run; prints its id."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from controlplane.accounts.models import Team
from controlplane.budgets.services import BudgetExceeded
from controlplane.datasets.models import Dataset
from controlplane.runs.services import run_create
from workers.engines.config import ConfigError, load_config_file


class Command(BaseCommand):
    help = ("Validate a run config (YAML or JSON with RunConfig fields; the dataset comes from --dataset), "
            "check the team's budget, and queue the run for a worker. Prints the run id.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True, help="the team's slug")
        parser.add_argument("--dataset", required=True, help="name (or id) of one of the team's datasets")
        parser.add_argument("--name", required=True, help="the run's name")
        parser.add_argument("--config", required=True, help="YAML/JSON file of RunConfig fields")
        parser.add_argument("--user", help="username the run is charged to (budget breakdown per user)")

    def handle(self, *args, team: str, dataset: str, name: str, config: str, user: str | None, **options) -> None:
        values = self._load(Path(config))  # first: a hostile file is refused before any query
        target = Team.objects.filter(slug=team).first()
        if target is None:
            raise CommandError(f"no team {team!r}; create it with `manage.py createteam`")
        datasets = Dataset.objects.filter(team=target)
        chosen = datasets.filter(name=dataset).first()
        if chosen is None and dataset.isdigit():
            chosen = datasets.filter(pk=int(dataset)).first()
        if chosen is None:
            names = ", ".join(datasets.order_by("name").values_list("name", flat=True)[:10]) or "none yet"
            raise CommandError(f"team {team} has no dataset {dataset!r} (its datasets: {names}); "
                               f"import one with `manage.py import_dataset`")
        owner = None
        if user:
            owner = get_user_model().objects.filter(username=user).first()
            if owner is None or not target.memberships.filter(user=owner).exists():
                raise CommandError(f"--user {user!r} is not a member of team {team}")
        try:
            run = run_create(team=target, dataset=chosen, name=name, config=values, user=owner)
        except ConfigError as exc:
            lines = "\n".join(f"  {e.field}: {e.message}" for e in exc.errors)
            raise CommandError(f"{config} is not a valid run config; fix these:\n{lines}") from exc
        except BudgetExceeded as exc:
            raise CommandError(f"refused: {exc}") from exc
        self.stdout.write(str(run.id))

    @staticmethod
    def _load(path: Path) -> dict:
        """The file as a mapping, bounded: size, nesting depth, no anchors or aliases (an alias
        bomb expands a few hundred bytes into gigabytes); see docs/limits.md."""
        try:
            return load_config_file(path)
        except ConfigError as exc:
            raise CommandError("; ".join(e.message for e in exc.errors)) from exc
