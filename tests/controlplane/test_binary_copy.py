"""Binary COPY (``telemetry.pgcopy``, what ``copy_columns`` sends on Postgres) stores exactly what
a parameterized INSERT of the same Python values stores (psycopg's own adaptation: an independent
reference), for every column type it writes and the values that break text formats: NULLs,
quotes, commas, backslashes, line breaks, non-ASCII text, empty strings, NaN, infinities, -0.0,
integer extremes; across batch boundaries and from sliced Arrow arrays. Values it cannot send
raise a clear error and write nothing."""

from __future__ import annotations

import math
import random

import psycopg
import pyarrow as pa
import pytest
from django.db import DataError, connection, transaction

from controlplane.telemetry import pgcopy, services
from controlplane.telemetry.models import PromptObservation, SelectionDecision
from controlplane.telemetry.services import (
    DECISION_TYPES,
    OBSERVATION_TYPES,
    STATE_STAGING,
    STATE_STAGING_CREATE,
    STATE_TYPES,
    copy_columns,
)
from tests.conftest import database_url_of

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="binary COPY is Postgres's")

# A column of each type the encoder writes: (Postgres type, Arrow type, value drawer)
TEXTS = ["", "plain", 'a "quoted", comma', "back\\slash", "line\nbreak\r\n", "tab\there", "ünïcødé ✓ 漢字 🧪",
         "NULL", "\\N", ",", '"', "x" * 300]
JSONS = ['{}', '{"a": 1}', '{"rank": 0.1, "successes": 3}', '{"s": "a \\"b\\" \\n ✓"}', '[1, 2.5, null]', '"x"']
FLOATS = [0.0, -0.0, 1.5, -2.25e-308, 1e308, 0.1, float("nan"), float("inf"), float("-inf"), 5e-324]
COLUMNS = {
    "a_bigint": ("bigint", pa.int64(), lambda r: r.choice([0, -1, 2**63 - 1, -(2**63), r.randrange(-10**12, 10**12)])),
    "b_integer": ("integer", pa.int64(), lambda r: r.choice([0, 2**31 - 1, -(2**31), r.randrange(-1000, 1000)])),
    "c_smallint": ("smallint", pa.int64(), lambda r: r.choice([0, 32767, -32768, 7])),
    "d_double": ("double precision", pa.float64(), lambda r: r.choice(FLOATS + [r.uniform(-1e6, 1e6)])),
    "e_real": ("real", pa.float64(), lambda r: r.choice([0.0, 1.5, float("nan"), float("inf"), r.uniform(-1, 1)])),
    "f_boolean": ("boolean", pa.bool_(), lambda r: r.random() < 0.5),
    "g_text": ("text", pa.string(), lambda r: r.choice(TEXTS)),
    "h_varchar": ("character varying(300)", pa.string(), lambda r: r.choice(TEXTS)),
    "i_jsonb": ("jsonb", pa.string(), lambda r: r.choice(JSONS)),
    "j_json": ("json", pa.string(), lambda r: r.choice(JSONS)),
}


def comparable(value):
    return "NaN" if isinstance(value, float) and math.isnan(value) else value


def scratch_table(name: str) -> None:
    columns = ", ".join(f"{column} {pg_type}" for column, (pg_type, _, _) in COLUMNS.items())
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {name} (n integer, {columns})")


def read(table: str, names: list[str], order: str = "n") -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order}")
        return [tuple(comparable(v) for v in row) for row in cursor.fetchall()]


def inserted(table: str, names: list[str], rows: list[tuple]) -> None:
    """The reference: psycopg's parameterized INSERT of the same values."""
    marks = ", ".join(["%s"] * len(names))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", rows)


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_type_is_stored_as_an_insert_stores_it(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(pgcopy, "BATCH_ROWS", rng.choice([1, 7, 64, 65_536]))  # batch edges inside the rows
    rows = rng.choice([1, 2, 150, 400])
    names = ["n", *COLUMNS]
    columns = {"n": list(range(rows))}
    for name, (_, _, draw) in COLUMNS.items():
        null_share = rng.choice([0.0, 0.3, 1.0])
        columns[name] = [None if rng.random() < null_share else draw(rng) for _ in range(rows)]
    types = {"n": pa.int64(), **{name: kind for name, (_, kind, _) in COLUMNS.items()}}
    copied, reference = f"copied_{seed}", f"reference_{seed}"
    scratch_table(copied)
    scratch_table(reference)
    # half the columns as Arrow arrays sliced out of a larger one (a non-zero offset), half as lists
    given = {name: (pa.array([None, *values, None], type=types[name])[1:-1] if i % 2 else values)
             for i, (name, values) in enumerate(columns.items())}
    assert copy_columns(copied, types, given) == rows
    inserted(reference, names, list(zip(*columns.values(), strict=True)))
    assert read(copied, names) == read(reference, names)
    assert len(read(copied, names)) == rows


@pytest.mark.django_db
def test_the_ingest_tables_columns_are_all_written_by_binary_copy():
    """Every table the ingestion copies into has only column types the encoder writes."""
    with connection.cursor() as cursor:
        cursor.execute(STATE_STAGING_CREATE)
    for table, types in ((PromptObservation._meta.db_table, OBSERVATION_TYPES),
                         (SelectionDecision._meta.db_table, DECISION_TYPES), (STATE_STAGING, STATE_TYPES)):
        with connection.cursor() as cursor:
            cursor.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                           "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", [table])
            found = dict(cursor.fetchall())
        assert all(pgcopy.supported(found[name]) for name in types), (table, found)


@pytest.mark.django_db
def test_a_value_it_cannot_send_is_a_clear_error_and_writes_nothing():
    scratch_table("refused")
    values = {"n": [1, 2], **{name: [None, None] for name in COLUMNS}}
    types = {"n": pa.int64(), **{name: kind for name, (_, kind, _) in COLUMNS.items()}}
    too_big = {**values, "b_integer": [1, 2**31]}  # numpy would wrap it; Postgres's text input refused it
    refusals = [
        # Django's DataError, as for an execute(): ingest answers it with a 400 naming the value
        (DataError, "b_integer.*out of range for type integer", types, too_big),
        # Postgres's own refusals (a record refuses a NUL character before: workers.record)
        (DataError, "0x00", types, {**values, "g_text": ["ok", "nul\x00byte"]}),
        (DataError, "json", types, {**values, "i_jsonb": ["{}", "{not json"]}),
        (pgcopy.CopyTypeError, "g_text: Arrow int64 cannot be sent as text", {**types, "g_text": pa.int64()},
         {**values, "g_text": [1, 2]}),
        (pgcopy.CopyTypeError, "b_integer: Arrow double cannot be sent as integer",
         {**types, "b_integer": pa.float64()}, {**values, "b_integer": [1.0, 2.5]}),
    ]
    for error, message, given_types, given in refusals:
        with pytest.raises(error, match=message), transaction.atomic():
            copy_columns("refused", given_types, given)
    assert read("refused", ["n"]) == []
    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE odd_type (n integer, at timestamptz)")
    with pytest.raises(pgcopy.CopyTypeError, match="at \\(timestamp with time zone\\)"):
        copy_columns("odd_type", {"n": pa.int64(), "at": pa.string()}, {"n": [1], "at": ["2026-12-03"]})


@pytest.mark.django_db
@pytest.mark.parametrize("rows", [1, 3, 70_000])  # one chunk, and more than BATCH_ROWS: several
def test_the_rows_are_encoded_before_the_copy_opens(monkeypatch, rows):
    """While a COPY waits for its data the session is active, not idle in a transaction, so
    Postgres's idle timeout would not end the transaction of a worker frozen there (its run's lock
    held, the reconciler unable to judge it lost). So no encoding may run while a COPY is open:
    another session watches this one's state as each chunk is made."""
    scratch_table("watched")
    pid = connection.cursor().connection.info.backend_pid
    seen = []
    encode = services.binary_copy_chunks

    with psycopg.connect(database_url_of(connection.settings_dict), autocommit=True) as watcher:
        def watched(*args, **kwargs):
            for chunk in encode(*args, **kwargs):
                seen.append(watcher.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s",
                                            [pid]).fetchone())
                yield chunk

        monkeypatch.setattr(services, "binary_copy_chunks", watched)
        copy_columns("watched", {"n": pa.int64(), "g_text": pa.string()},
                     {"n": list(range(rows)), "g_text": ["x"] * rows})
    assert len(seen) == 2 + -(-rows // pgcopy.BATCH_ROWS)  # header, each chunk, trailer
    assert not [s for s in seen if s[0] == "active" and s[1].startswith("COPY")], seen
    assert read("watched", ["count(*)"], order="1") == [(rows,)]
