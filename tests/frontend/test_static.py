"""The dashboard's JS draws by the names the page's config gives it: no method, bucket,
run status or metric name is spelled in a JS file (their homes: the selection registry,
workers.selection.ledger.Bucket, controlplane.runs.models.RunStatus, the selectors' panels)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane.runs.models import RunStatus
from workers.selection.ledger import Bucket
from workers.selection.registry import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
JS = sorted((ROOT / "frontend" / "static" / "frontend").glob("*.js"))
RUN_TEMPLATE = ROOT / "frontend" / "templates" / "frontend" / "run.html"


def quoted_or_key(name: str) -> re.Pattern:
    """The name as a string literal ("edge", 'edge', `edge`) or an object key (edge: ...)."""
    n = re.escape(name)
    return re.compile(rf"""["'`]{n}["'`]|(?<![\w.$-]){n}\s*:(?!:)""")


def metric_names() -> set[str]:
    return {s.metric for cls in REGISTRY.values() for p in cls.panels for s in p.series if s.metric} | {
        s.decision for cls in REGISTRY.values() for p in cls.panels for s in p.series if s.decision}


def test_there_are_js_files_to_scan():
    assert {p.name for p in JS} >= {"run.js", "live.js", "plots.js", "compare.js", "prompt.js", "new_run.js"}


@pytest.mark.parametrize("path", JS, ids=lambda p: p.name)
def test_no_js_file_spells_a_method_bucket_status_or_metric_name(path):
    text = path.read_text()
    found = [m for m in REGISTRY if re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", text)]
    found += [b for b in Bucket.NAMES if quoted_or_key(b).search(text)]
    found += [s.value for s in RunStatus if quoted_or_key(s.value).search(text)]
    found += [name for name in sorted(metric_names()) if name in text]
    assert found == [], f"{path.name} spells {found}: read them from the page's config"


def test_the_run_template_names_no_method():
    text = RUN_TEMPLATE.read_text()
    assert [m for m in REGISTRY if re.search(rf"(?<![\w-]){re.escape(m)}(?![\w-])", text)] == []


def test_the_scan_would_catch_a_literal():
    assert quoted_or_key("too_easy").search('const c = { too_easy: "#16a34a" };')
    assert quoted_or_key("succeeded").search('FINISHED = ["succeeded"]')
    assert not quoted_or_key("edge").search("cfg.urls.edge; // the learning edge")


def legend_literals(text: str) -> list[str]:
    """Trace names the JS spells as literals: line(x, y, "name", ...) and { name: "..." }."""
    found = re.findall(r"""\bline\([^,]+,[^,]+,\s*["'`]([^"'`]*)["'`]""", text)
    return found + re.findall(r"""\bname:\s*["'`]([^"'`$]*)["'`]""", text)


@pytest.mark.parametrize("path", JS, ids=lambda p: p.name)
def test_no_legend_in_the_js_is_a_raw_column_or_metric_name(path):
    raw = [name for name in legend_literals(path.read_text()) if re.search(r"[a-z]_[a-z]|/", name)]
    assert raw == [], f"{path.name} draws legends {raw}: say them in words"


def test_the_legend_scan_would_catch_a_raw_name():
    assert legend_literals('line(s.step, s.pass_rate, "pass_rate", "#16a34a")') == ["pass_rate"]
    assert legend_literals('line(x, metric("a/b"), "rlzvp/shaped_share", "#0d9488")') == ["rlzvp/shaped_share"]
    assert legend_literals('{ x, y, name: "dropped groups", type: "bar" }') == ["dropped groups"]
