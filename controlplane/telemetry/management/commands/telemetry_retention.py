"""telemetry_retention [--dry-run] [--limit N] [--run ID]: archive per-prompt telemetry of runs past
their team's retention to Parquet and remove it from the database; prints what it did."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from controlplane.runs.models import Run
from controlplane.telemetry.retention import ArchiveRefused, retention_apply, run_telemetry_archive


class Command(BaseCommand):
    help = (
        "Apply each team's telemetry retention: a finished run older than the team's telemetry_retention_days "
        "has its prompt observations and selection decisions written to Parquet files under "
        "EDGEPLANE_ARCHIVE_DIR and removed from the database. Prints the runs, rows and bytes."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="change nothing; print what would be archived")
        parser.add_argument("--limit", type=int, help="archive at most this many runs")
        parser.add_argument("--run", type=int, help="archive this finished run now, whatever its team's retention")

    def handle(self, *args, dry_run: bool, limit: int | None, run: int | None, **options) -> None:
        if run is not None:
            if dry_run:
                raise CommandError("--run archives one run now; --dry-run lists what the retention would archive")
            if not Run.objects.filter(pk=run).exists():
                raise CommandError(f"no run {run}")
            try:
                outcomes = [run_telemetry_archive(run)]
            except ArchiveRefused as exc:
                raise CommandError(str(exc)) from None
        else:
            outcomes = retention_apply(dry_run=dry_run, limit=limit)
        for o in outcomes:
            self.stdout.write(
                f"{o.status}: run {o.run} (team {o.team}): {o.observations} observations, "
                f"{o.decisions} decisions"
                + (f", {o.bytes} bytes in {o.path}" if o.path else "")
                + (f" (reused verified {', '.join(o.reused)})" if o.reused else "")
            )
        done = [o for o in outcomes if o.status in ("archived", "would archive")]
        verb = "would archive" if dry_run else "archived"
        self.stdout.write(
            f"{verb} {len(done)} run{'s' if len(done) != 1 else ''}: "
            f"{sum(o.observations for o in done)} observations, {sum(o.decisions for o in done)} "
            f"decisions, {sum(o.bytes for o in done)} bytes"
        )
