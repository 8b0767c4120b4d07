"""The JSON work of one step over HTTP, apart from the database: what the verl sink and the server
spend on a step record's body (``--prompts`` observed, ``--decisions-per-prompt`` decisions each;
the record of ``bench/telemetry_ingest.py``).

- client: ``http_sink.event_json`` (compact JSON, no NaN) and ``encode_event`` (that, gzip level 1);
- server: inflating the body, ``json.loads``, and the depth check every body passes
  (``parsers.json_depth_over``), against the depth check as it was before it passed over
  all-scalar members in C (``depth_check_before``, kept here as the baseline);
- ``orjson`` (when installed) for the same encode and parse: a yardstick, not what runs (it writes
  NaN as null without a word, where ``event_json`` refuses it).

Median (min-max) ms of ``--repeats`` timings, each alone. No database: run it with the venv's
python. Prints and writes bench/results/json_body.json (or ``--out``).

    .venv/bin/python bench/json_body.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's modules first


def depth_check_before(value: Any, limit: int) -> bool:
    """``json_depth_over`` before 2026-12-03: every member of every list and object looked at in Python."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def timed(fn: Any, repeats: int) -> dict[str, float]:
    fn()  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--decisions-per-prompt", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="folder of the results file (default bench/results)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from bench._timing import write_results
    from bench.telemetry_ingest import rows_of, step_record
    from controlplane.api.parsers import MAX_JSON_DEPTH, json_depth_over
    from workers.engines.verl.http_sink import encode_event, event_json

    record = step_record(0, args.prompts, args.decisions_per_prompt)
    wire = {"event": "step", **record.to_wire()}
    text = event_json(wire)
    body, headers = encode_event(text)
    value = json.loads(text)
    assert not json_depth_over(value, MAX_JSON_DEPTH) and not depth_check_before(value, MAX_JSON_DEPTH)
    figures: dict[str, Any] = {
        "client_event_json": timed(lambda: event_json(wire), args.repeats),
        "client_encode_event": timed(lambda: encode_event(wire), args.repeats),
        "server_inflate": timed(lambda: gzip.decompress(body), args.repeats),
        "server_json_loads": timed(lambda: json.loads(text), args.repeats),
        "server_depth_check": timed(lambda: json_depth_over(value, MAX_JSON_DEPTH), args.repeats),
        "server_depth_check_before": timed(lambda: depth_check_before(value, MAX_JSON_DEPTH), args.repeats),
    }
    try:
        import orjson
    except ImportError:
        orjson = None
    if orjson is not None:
        assert orjson.loads(orjson.dumps(wire)) == value
        figures["orjson_dumps"] = timed(lambda: orjson.dumps(wire), args.repeats)
        figures["orjson_loads"] = timed(lambda: orjson.loads(text), args.repeats)
    path = write_results("json_body", {
        "what": "ms of JSON work on one step record's HTTP body, each timing alone, median (min-max) of the repeats; "
                "server_depth_check_before is the depth check before 2026-12-03 (the baseline of server_depth_check)",
        "rows": rows_of(record), "json_bytes": len(text), "body_bytes": len(body),
        "content_encoding": headers.get("Content-Encoding", ""), "figures": figures}, args.out)
    print(f"a step of {rows_of(record):,} rows: {len(text):,} bytes of JSON, {len(body):,} sent")
    for name, figure in figures.items():
        print(f"  {name:<28} {figure['median_ms']:7.2f} ms ({figure['min_ms']:.2f}-{figure['max_ms']:.2f})")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
