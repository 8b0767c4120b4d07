"""usage_days_rebuild [--team SLUG]: remake the usage ledger's days (what budgets are read from)
from the ledger, after a change to the ledger made around the services; prints what it wrote."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from controlplane.accounts.models import Team
from controlplane.budgets.services import usage_days_rebuild


class Command(BaseCommand):
    help = (
        "Remake the device-seconds per run and day that budgets are read from (UsageDay) from the usage ledger, "
        "for one team or every team. Needed only after the ledger was changed around Edgeplane (a fix in SQL); "
        "runs booking meanwhile wait for it and then add to the rebuilt days."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", help="the team's slug (default: every team)")

    def handle(self, *args, team: str | None, **options) -> None:
        team_id = None
        if team is not None:
            team_id = Team.objects.filter(slug=team).values_list("id", flat=True).first()
            if team_id is None:
                raise CommandError(f"no team with the slug {team!r}")
        days = usage_days_rebuild(team_id=team_id)
        self.stdout.write(f"rebuilt {days} usage day{'s' if days != 1 else ''} (run x day) for "
                          f"{'team ' + team if team else 'every team'} from the usage ledger")
