"""The learning-edge map's read on a cold cache: the recent-states index with and without the map's
columns INCLUDEd (migration telemetry 0007), on the same rows.

Two tables shaped as ``runs_promptstate`` hold the same ``--runs`` x ``--prompts`` states, filled
run after run, vacuumed; one has the plain (run_id, last_step DESC, prompt_key) index, the other
the same index with INCLUDE (pass_rate, response_entropy, bucket). Before each round Postgres is
restarted (its buffers emptied) and the kernel's page cache dropped, then the two reads of
``frontend.selectors.edge_points`` (the run's state count, the 4,000 most recently seen states)
are timed once on each of ``--sample`` runs drawn at random: every run's first read, from disk.

Needs root (to drop the page cache) and Postgres's binaries; runs its own server in a temporary
folder. Prints and writes bench/results/learning_edge_cold.json.

    .venv/bin/python bench/learning_edge_cold.py
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TABLE_SQL = """CREATE TABLE {t} (id bigserial PRIMARY KEY, run_id bigint NOT NULL, prompt_key varchar(255) NOT NULL,
bucket varchar(16) NOT NULL, pass_rate float8, response_entropy float8, prompt_entropy float8, visits int NOT NULL,
last_step int NOT NULL, UNIQUE (run_id, prompt_key))"""
INDEXES = {
    "plain": "CREATE INDEX {t}_recent ON {t} (run_id, last_step DESC, prompt_key)",
    "covering": "CREATE INDEX {t}_recent ON {t} (run_id, last_step DESC, prompt_key) "
                "INCLUDE (pass_rate, response_entropy, bucket)",
}
FILL_SQL = """INSERT INTO {t} (run_id, prompt_key, bucket, pass_rate, response_entropy, prompt_entropy, visits,
last_step) SELECT r, 'bench:' || k, (ARRAY['too_easy', 'edge', 'too_hard', 'pruned', 'stale'])[1 + k % 5],
(k % 9) / 8.0, 0.3 + (k % 7) / 10.0, 0.2, 1 + k % 30, 499 - (k % 40)
FROM generate_series(1, {runs}) AS r, generate_series(0, {prompts} - 1) AS k"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--prompts", type=int, default=20_000)
    parser.add_argument("--sample", type=int, default=25, help="runs read, each once, per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limit", type=int, default=4000, help="states on the map (frontend.selectors.EDGE_POINTS)")
    args = parser.parse_args()
    import psycopg

    from bench._timing import write_results
    from tests.services import free_port

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not binaries or os.geteuid() != 0:
        sys.exit("error: needs Postgres's binaries under /usr/lib/postgresql and root (to drop the page cache)")
    bindir, port = binaries[-1], free_port()
    folder = Path(tempfile.mkdtemp(prefix="edgeplane-cold-"))
    shutil.chown(folder, "postgres")
    data = folder / "data"

    def as_postgres(*command: str) -> None:
        subprocess.run(["su", "postgres", "-c", " ".join(command)], check=True, stdout=subprocess.DEVNULL)

    def pg_ctl(action: str) -> None:
        as_postgres(f"{bindir}/pg_ctl", "-D", str(data), "-l", str(folder / "log"), "-w", action,
                    "-o", f"'-p {port} -c shared_buffers=128MB -c listen_addresses=127.0.0.1'")

    as_postgres(f"{bindir}/initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    pg_ctl("start")
    dsn = f"host=127.0.0.1 port={port} user=postgres"
    try:
        sizes = {}
        with psycopg.connect(dsn, autocommit=True) as conn:
            for kind, index in INDEXES.items():
                table = f"state_{kind}"
                conn.execute(TABLE_SQL.format(t=table))
                conn.execute(index.format(t=table))
                conn.execute(FILL_SQL.format(t=table, runs=args.runs, prompts=args.prompts))
                conn.execute(f"VACUUM ANALYZE {table}")
                sizes[kind] = {"index_mb": float(conn.execute(
                    f"SELECT pg_relation_size('{table}_recent') / 1e6").fetchone()[0])}
        rounds: dict[str, list[dict[str, list[float]]]] = {kind: [] for kind in INDEXES}
        rng = random.Random(5)
        for _ in range(args.rounds):
            for kind in INDEXES:
                pg_ctl("restart")
                subprocess.run(["sync"], check=True)
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
                table, times = f"state_{kind}", {"count_ms": [], "map_ms": [], "both_ms": []}
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for run in rng.sample(range(1, args.runs + 1), args.sample):
                        start = time.perf_counter()
                        conn.execute(f"SELECT count(*) FROM {table} WHERE run_id = %s", [run]).fetchall()
                        middle = time.perf_counter()
                        conn.execute(f"SELECT prompt_key, pass_rate, response_entropy, bucket FROM {table} "
                                     "WHERE run_id = %s ORDER BY last_step DESC, prompt_key LIMIT %s",
                                     [run, args.limit]).fetchall()
                        end = time.perf_counter()
                        times["count_ms"].append((middle - start) * 1e3)
                        times["map_ms"].append((end - middle) * 1e3)
                        times["both_ms"].append((end - start) * 1e3)
                rounds[kind].append(times)
    finally:
        pg_ctl("stop")
        shutil.rmtree(folder, ignore_errors=True)

    def spread(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {"median": statistics.median(ordered), "p95": ordered[round(0.95 * (len(ordered) - 1))],
                "max": ordered[-1], "n": len(ordered)}

    figures = {kind: {**sizes[kind], "rounds": [{name: spread(v) for name, v in r.items()} for r in rs]}
               for kind, rs in rounds.items()}
    for kind, figure in figures.items():
        for i, r in enumerate(figure["rounds"]):
            print(f"{kind:8s} round {i + 1}: " + "; ".join(
                f"{name} median {v['median']:.1f} p95 {v['p95']:.1f} max {v['max']:.1f}" for name, v in r.items()))
    path = write_results("learning_edge_cold", {
        "what": "edge_points' two reads, each run read once after a Postgres restart and a dropped page cache",
        "runs": args.runs, "prompts_per_run": args.prompts, "shared_buffers": "128MB", "figures": figures})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
