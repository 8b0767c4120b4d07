"""The JSON work of one step over HTTP, apart from the database: what the verl sink and the server
spend on a step record's body (``--prompts`` observed, ``--decisions-per-prompt`` decisions each;
the record of ``bench/telemetry_ingest.py``).

- client: ``http_sink.event_json`` (compact JSON, no NaN) and ``encode_event`` (that, gzip level 1);
- server: inflating the body, ``json.loads``, and the depth check every body passes
  (``parsers.json_depth_over``);
- ``orjson`` (when installed) for the same encode and parse: a yardstick, not what runs (it writes
  NaN as null without a word, where ``event_json`` refuses it).

Median (min-max) ms of ``--repeats`` timings, each alone. No database: run it with the venv's
python. Prints and writes bench/results/<--name>.json (or in ``--out``). A "before" is this file
run in a checkout of the older tree (``--name json_body_before``; docs/telemetry_scale.md).

    .venv/bin/python bench/json_body.py
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's modules first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1024)
    parser.add_argument("--decisions-per-prompt", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--name", default="json_body", help="the results file's name")
    parser.add_argument("--out", type=Path, default=None, help="folder of the results file (default bench/results)")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django

    django.setup()
    from bench._timing import summary_ms, times_ms, write_results
    from bench.telemetry_ingest import rows_of, step_record
    from controlplane.api.parsers import MAX_JSON_DEPTH, json_depth_over
    from workers.engines.verl.http_sink import encode_event, event_json

    record = step_record(0, args.prompts, args.decisions_per_prompt)
    wire = {"event": "step", **record.to_wire()}
    text = event_json(wire)
    body, headers = encode_event(text)
    value = json.loads(text)
    assert not json_depth_over(value, MAX_JSON_DEPTH)

    def timed(fn: Any) -> dict[str, float]:
        return summary_ms(times_ms(fn, args.repeats))

    figures: dict[str, Any] = {
        "client_event_json": timed(lambda: event_json(wire)),
        "client_encode_event": timed(lambda: encode_event(wire)),
        "server_inflate": timed(lambda: gzip.decompress(body)),
        "server_json_loads": timed(lambda: json.loads(text)),
        "server_depth_check": timed(lambda: json_depth_over(value, MAX_JSON_DEPTH)),
    }
    try:
        import orjson
    except ImportError:
        orjson = None
    if orjson is not None:
        assert orjson.loads(orjson.dumps(wire)) == value
        figures["orjson_dumps"] = timed(lambda: orjson.dumps(wire))
        figures["orjson_loads"] = timed(lambda: orjson.loads(text))
    path = write_results(args.name, {
        "what": "ms of JSON work on one step record's HTTP body, each timing alone, median (min-max) of the repeats",
        "rows": rows_of(record), "json_bytes": len(text), "body_bytes": len(body),
        "content_encoding": headers.get("Content-Encoding", ""), "figures": figures}, args.out)
    print(f"a step of {rows_of(record):,} rows: {len(text):,} bytes of JSON, {len(body):,} sent")
    for name, figure in figures.items():
        print(f"  {name:<28} {figure['median_ms']:7.2f} ms ({figure['min_ms']:.2f}-{figure['max_ms']:.2f})")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
