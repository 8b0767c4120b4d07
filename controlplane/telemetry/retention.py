"""Retention of per-prompt telemetry: a team's finished runs older than its
``telemetry_retention_days`` have their observations and decisions exported to Parquet
(``controlplane.telemetry.archive``) and removed from the database.

Step summaries, evaluations and prompt states stay in the database: the run page and its
step charts are unchanged. The prompt page, the audit trail and the API's decisions read the
files once ``run.telemetry_archived_at`` is set.

The order of one archive (``run_telemetry_archive``), each step safe to crash after:

0. lock: one archive of a run at a time (an exclusive, non-waiting lock on a file beside the
   run's folder); the run is read again under it, so a pass that finds it archived stops;
1. claim: the run's ``telemetry_archive_path`` is set, only while the run is finished and not
   archived (an atomic ``UPDATE ... WHERE``). From then on the run may not be resumed
   (``runs.services.resume_refusal``), so its rows cannot change under the export;
2. export each table to its file (temporary name, fsync, atomic rename), unless a file is
   already there whose fingerprint (row count and sum of ids, read back from the file) is the
   database's: a crash after an export reuses the file, a stale or torn one is written again;
3. in one transaction, with the run's row locked: the database's fingerprint is taken again
   and must equal each file's; only then are the rows removed
   (``partitions.run_rows_drop``) and ``telemetry_archived_at`` set. A mismatch removes nothing.

An error before step 3 commits releases the claim (the run can be resumed again); a crash
leaves it, and the next pass (beat, or the command) takes the run up where it stopped.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Sum
from django.utils import timezone

from controlplane.runs.models import FINISHED, Run
from controlplane.telemetry import archive, partitions
from controlplane.telemetry.archive import DECISIONS, OBSERVATIONS, TABLES, Fingerprint, Table
from controlplane.telemetry.models import PromptObservation, SelectionDecision

log = logging.getLogger(__name__)

MODELS = {OBSERVATIONS.name: PromptObservation, DECISIONS.name: SelectionDecision}
EXPORT_CHUNK = archive.BATCH_ROWS  # rows fetched per round trip of the export's server-side cursor


class ArchiveRefused(Exception):
    """The run cannot be archived (not finished, resumed meanwhile, or its rows changed)."""


@dataclass
class ArchiveOutcome:
    run: int
    team: str
    status: str  # archived, already archived, would archive
    path: str = ""
    observations: int = 0
    decisions: int = 0
    bytes: int = 0
    reused: list[str] = field(default_factory=list)  # tables whose verified file a crashed pass left

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _db_fingerprint(table: Table, run_id: int) -> Fingerprint:
    agg = MODELS[table.name].objects.filter(run_id=run_id).aggregate(n=Count("id"), s=Sum("id"))
    return Fingerprint(rows=int(agg["n"] or 0), id_sum=int(agg["s"] or 0))


def _rows(table: Table, run_id: int) -> Iterator[tuple]:
    """The table's rows of the run in the archive's order, streamed (a server-side cursor on
    Postgres; chunks on SQLite): memory holds one chunk, not the run. Plain SQL rather than the
    ORM: no per-row conversion, and a decision's scores come as the database's JSON text (what
    the archive stores), not decoded and encoded again."""
    qn = connection.ops.quote_name
    columns = ", ".join(f"CAST({qn(name)} AS text)" if name == "scores" else qn(name) for name in table.fields)
    sql = (
        f"SELECT {columns} FROM {qn(MODELS[table.name]._meta.db_table)} WHERE {qn('run_id')} = %s "
        f"ORDER BY {qn('prompt_key')}, {qn('step')}, {qn('id')}"
    )
    with connection.chunked_cursor() as cursor:
        cursor.execute(sql, [run_id])
        while rows := cursor.fetchmany(EXPORT_CHUNK):
            yield from rows


def _default_path(run: Run) -> str:
    return f"{run.team.slug}/{run.pk}"


@contextmanager
def _archive_lock(relative: str, run_id: int) -> Iterator[None]:
    """One archive of a run at a time (beat and the command at once, two control workers): an
    exclusive lock on ``<archive root>/<path>.lock``, not waited for. Without it a second pass
    could export after the first removed the rows and write an empty file over the archive."""
    path = archive.archive_root() / f"{relative}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArchiveRefused(f"run {run_id} is being archived by another process; nothing was done") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _claim(run: Run) -> str:
    """Set the archive path (keeping one a crashed pass set), only while the run is finished and
    not archived. Returns the path; ArchiveRefused when the run is not in that state."""
    relative = run.telemetry_archive_path or _default_path(run)
    claimed = Run.objects.filter(pk=run.pk, status__in=FINISHED, telemetry_archived_at=None).update(
        telemetry_archive_path=relative
    )
    if claimed != 1:
        raise ArchiveRefused(f"run {run.pk} is {run.status}: only a finished run's telemetry is archived")
    return relative


def _release(run_id: int) -> None:
    Run.objects.filter(pk=run_id, telemetry_archived_at=None).update(telemetry_archive_path="")


def _export(table: Table, run_id: int, relative: str) -> tuple[Fingerprint, bool]:
    """A verified file of the table: the one there when it matches the database, else a new
    one. Returns its fingerprint and whether it was reused."""
    path = archive.archive_dir(relative) / table.file
    expected = _db_fingerprint(table, run_id)
    if archive.file_fingerprint(path) == expected:
        return expected, True
    archive.table_write(table, _rows(table, run_id), path)
    written = archive.file_fingerprint(path)
    if written != expected:
        raise ArchiveRefused(
            f"run {run_id}: {table.file} holds {written} but the database {expected}; nothing was removed"
        )
    return written, False


def _drop_if_verified(run_id: int, relative: str, verified: dict[str, Fingerprint]) -> datetime:
    with transaction.atomic():
        run = Run.objects.select_for_update().get(pk=run_id)
        if (
            run.status not in FINISHED
            or run.telemetry_archived_at is not None
            or run.telemetry_archive_path != relative
        ):
            raise ArchiveRefused(f"run {run_id} changed during its archive ({run.status}); nothing was removed")
        for table in TABLES:
            now_in_db = _db_fingerprint(table, run_id)
            if now_in_db != verified[table.name]:
                raise ArchiveRefused(
                    f"run {run_id}: {table.name} changed since the export ({now_in_db} in the "
                    f"database, {verified[table.name]} in the file); nothing was removed"
                )
        partitions.run_rows_drop(run_id)
        archived_at = timezone.now()
        Run.objects.filter(pk=run_id).update(telemetry_archived_at=archived_at)
    return archived_at


def run_telemetry_archive(run_id: int) -> ArchiveOutcome:
    """Move a finished run's observations and decisions to Parquet files, then out of the
    database (the module's docstring says in which order, and why that is crash-safe).
    Idempotent: an archived run is left as it is. ArchiveRefused for a run not finished."""
    run = Run.objects.select_related("team").get(pk=run_id)
    if run.telemetry_archived_at is not None:
        return _outcome(run, run.telemetry_archive_path, "already archived")
    with _archive_lock(run.telemetry_archive_path or _default_path(run), run_id):
        run = Run.objects.select_related("team").get(pk=run_id)  # another process may have archived it meanwhile
        if run.telemetry_archived_at is not None:
            return _outcome(run, run.telemetry_archive_path, "already archived")
        relative = _claim(run)
        try:
            verified, reused = {}, []
            for table in TABLES:
                verified[table.name], was_reused = _export(table, run_id, relative)
                if was_reused:
                    reused.append(table.name)
            _drop_if_verified(run_id, relative, verified)
        except BaseException:
            _release(run_id)  # rows were not removed: the run may be resumed again; files stay for reuse
            raise
    outcome = _outcome(
        run,
        relative,
        "archived",
        observations=verified[OBSERVATIONS.name].rows,
        decisions=verified[DECISIONS.name].rows,
    )
    outcome.reused = reused
    log.info(
        "telemetry archived: run=%s path=%s observations=%s decisions=%s bytes=%s reused=%s",
        run_id,
        relative,
        outcome.observations,
        outcome.decisions,
        outcome.bytes,
        reused,
    )
    return outcome


def _outcome(run: Run, relative: str, status: str, *, observations: int = 0, decisions: int = 0) -> ArchiveOutcome:
    size = 0
    if relative:
        folder = archive.archive_dir(relative)
        size = sum((folder / t.file).stat().st_size for t in TABLES if (folder / t.file).is_file())
    return ArchiveOutcome(
        run=run.pk,
        team=run.team.slug,
        status=status,
        path=relative,
        observations=observations,
        decisions=decisions,
        bytes=size,
    )


def runs_due_for_archive(now: datetime | None = None):
    """Finished, not yet archived runs older than their team's retention (finished_at before
    now - days), oldest first. Teams without a retention keep everything."""
    from controlplane.accounts.models import Team

    now = now or timezone.now()
    due = Run.objects.none()
    for team_id, days in Team.objects.filter(telemetry_retention_days__isnull=False).values_list(
        "id", "telemetry_retention_days"
    ):
        due = due | Run.objects.filter(
            team_id=team_id,
            status__in=FINISHED,
            telemetry_archived_at=None,
            finished_at__lt=now - timedelta(days=int(days)),
        )
    return due.select_related("team").order_by("finished_at", "id")


def retention_apply(
    *, dry_run: bool = False, limit: int | None = None, now: datetime | None = None
) -> list[ArchiveOutcome]:
    """Archive every run past its team's retention (at most ``limit``). ``dry_run`` changes
    nothing and answers what would be archived, with the rows it holds. A run that fails is
    logged and left for the next pass; the others go on."""
    outcomes: list[ArchiveOutcome] = []
    runs = runs_due_for_archive(now)
    if limit is not None:
        runs = runs[:limit]
    for run in runs:
        if dry_run:
            outcomes.append(
                _outcome(
                    run,
                    "",
                    "would archive",
                    observations=_db_fingerprint(OBSERVATIONS, run.pk).rows,
                    decisions=_db_fingerprint(DECISIONS, run.pk).rows,
                )
            )
            continue
        try:
            outcomes.append(run_telemetry_archive(run.pk))
        except ArchiveRefused as exc:
            log.warning("telemetry archive refused: run=%s: %s", run.pk, exc)
        except Exception:
            log.exception("telemetry archive failed: run=%s", run.pk)
    return outcomes
