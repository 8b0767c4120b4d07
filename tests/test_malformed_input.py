"""Every malformed input answers 4xx with a message, never 500: one table, every URL.

The URLs are read from the project's resolver (``django.urls.get_resolver``), so a new
endpoint is walked without touching this file. Each is asked, as a signed-in member of the
team that owns the run, dataset and budget in its path, with a battery of malformed query
parameters (floats, NaN, huge and negative numbers, non-digits, repeats, NUL bytes, DRF
cursors that are not cursors) and malformed bodies (JSON nested 100,000 deep, NaN literals,
non-UTF-8, wrong content types, lists and objects where numbers belong); path ids beyond a
column's range are tried too. A 500, or a 4xx without a readable message, fails the row.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.http import QueryDict
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from django.utils.datastructures import MultiValueDict

from controlplane.budgets.services import budget_set_period
from controlplane.datasets.services import dataset_import_builtin
from controlplane.runs.services import run_claim, run_create
from tests.frontend.conftest import train
from tests.frontend.helpers import CONFIG

pytestmark = pytest.mark.django_db

BIG = str(2**64)  # beyond bigint
BIG31 = str(2**31 + 7)  # beyond integer

# Query parameters the views read, sent all at once with each bad value. One at a time, a route is
# asked with every name its views looked up (``names_read``): these, and any name not listed here.
PARAMETERS = ("after", "cursor", "before", "dataset", "step", "step_min", "step_max", "page_size", "status",
              "method", "team", "run", "key", "batch_size", "group_size", "steps", "engine", "device", "bucket",
              "prompt", "action", "format", "baseline", "next", "name")
BAD_VALUES = ("5.", "1.5", "1e20", "nan", "Infinity", "-1", "-" + BIG, BIG, BIG31, "abc", "5.x", ".5", "1.2.3",
              "\x00", "0x10", "", "[]", "{}", "true", " 5 ", "٣")
SHARP_VALUES = ("5.", "nan", BIG, "-" + BIG, "\x00", "٣")


EVERY_NAME = "*"  # names_read's mark for a view that walked every parameter
# Looking a name up, and walking them all (a view that iterates, copies or counts the parameters).
LOOKUPS = ("__getitem__", "get", "getlist", "__contains__", "pop", "setdefault", "setlistdefault")
WALKS = ("__iter__", "__len__", "keys", "items", "lists", "values", "dict", "copy", "urlencode")
# QueryDict's own code looks names up while it is built and copied: those are not a view's reads.
_QUERYDICT_FILES = {sys.modules["django.http.request"].__file__, sys.modules["django.utils.datastructures"].__file__}


@contextlib.contextmanager
def names_read() -> Iterator[set[str]]:
    """The query (and form) parameter names that the code answering requests looked up inside the
    block, and EVERY_NAME when it walked all of them. One walk is not counted: the NUL scan of
    ``frontend.forms.malformed_input`` refuses any parameter holding a NUL, whatever its name,
    which the all-at-once requests (a NUL in every parameter) already try on every route."""
    from frontend.forms import malformed_input

    seen: set[str] = set()
    own = {name: QueryDict.__dict__[name] for name in (*LOOKUPS, *WALKS) if name in QueryDict.__dict__}

    def by_querydict(frame) -> bool:
        return frame.f_code.co_filename in _QUERYDICT_FILES

    def lookup(original: Callable) -> Callable:
        def recorded(self, key, *args, **kwargs):
            if not by_querydict(sys._getframe(1)):
                seen.add(key)
            return original(self, key, *args, **kwargs)
        return recorded

    def walk(original: Callable) -> Callable:
        def recorded(self, *args, **kwargs):
            caller = sys._getframe(1)
            if caller.f_code is not malformed_input.__code__ and not by_querydict(caller):
                seen.add(EVERY_NAME)
            return original(self, *args, **kwargs)
        return recorded

    for name in LOOKUPS:
        setattr(QueryDict, name, lookup(getattr(QueryDict, name)))
    for name in WALKS:
        setattr(QueryDict, name, walk(getattr(QueryDict, name)))
    try:
        yield seen
    finally:  # QueryDict as it was: its own methods back, the inherited ones inherited again
        for name in (*LOOKUPS, *WALKS):
            if name in own:
                setattr(QueryDict, name, own[name])
            else:
                delattr(QueryDict, name)


def _routes(patterns: list, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for p in patterns:
        route = prefix + str(p.pattern)
        if isinstance(p, URLResolver):
            yield from _routes(p.url_patterns, route)
        else:
            yield route, p


def all_routes() -> list[str]:
    """Every routed path of the project, as its route string (``runs/<int:run_id>/``)."""
    routes = []
    for route, _ in _routes(get_resolver().url_patterns):
        if route.startswith("admin/") and route != "admin/":
            continue  # Django's own admin: one entry stands for it
        if route.startswith("^") or "(?P" in route:
            continue  # regex routes (admin internals)
        routes.append(route)
    return routes


ROUTES = all_routes()


def fill(route: str, ids: dict[str, Any]) -> str:
    """The route with its converters filled: ``<int:run_id>`` from ``ids``."""
    return "/" + re.sub(r"<(?:(\w+):)?(\w+)>", lambda m: str(ids[m.group(2)]), route)


@pytest.fixture
def world(acme, enqueued, fast_passwords) -> dict[str, Any]:
    bob = get_user_model().objects.get(username="bob")
    dataset = dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")
    run = run_create(team=acme, dataset=dataset, name="edge-run", config=dict(CONFIG), user=bob)
    run_claim(run_id=run.id, worker="test:1")
    train(run, range(3))
    client = Client(raise_request_exception=False)  # a 500 is an answer to count, not an exception
    client.force_login(get_user_model().objects.get(username="alice"))
    # the team page's routes: a member (vera) and a budget of the team
    member = acme.memberships.get(user__username="vera")
    budget = budget_set_period(team=acme, period="month", day=timezone.now().date(), limit_device_hours=1000)
    return {"client": client, "ids": {"run_id": run.id, "dataset_id": dataset.id, "slug": acme.slug,
                                      "member_id": member.id, "budget_id": budget.id},
            "run": run, "dataset": dataset}


def readable(response) -> bool:
    """A 4xx that says something: a body with text, or a 405 whose Allow header says what to use."""
    body = b"".join(response.streaming_content) if response.streaming else response.content
    if response.status_code == 405 and response.has_header("Allow"):
        return True
    return len(body.strip()) > 5


def check(response, what: str, failures: list[str]) -> None:
    if response.status_code >= 500:
        failures.append(f"{what}: {response.status_code}")
    elif response.status_code >= 400 and not readable(response):
        failures.append(f"{what}: {response.status_code} with no message")


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_query_parameters_answer_4xx_with_a_message(world, route):
    client, url = world["client"], fill(route, world["ids"])
    failures: list[str] = []
    with names_read() as read:
        check(client.get(url), f"GET {url}", failures)
        for value in BAD_VALUES:  # every parameter at once: the API's serializers report them all
            check(client.get(url, {name: value for name in PARAMETERS}), f"GET {url}?*={value!r}", failures)
    # One at a time, so that one parameter's 400 hides no other's 500: every name the route looked
    # up (a parameter it never reads cannot upset it), all of them when it walked them all.
    names = sorted((read | set(PARAMETERS) if EVERY_NAME in read else read) - {EVERY_NAME})
    for name in names:
        for value in SHARP_VALUES:
            check(client.get(url, {name: value}), f"GET {url}?{name}={value!r}", failures)
        # the same parameter twice, a good value and a bad one
        check(client.get(f"{url}?{name}=1&{name}=5."), f"GET {url}?{name}=1&{name}=5.", failures)
    # DRF cursors (base64 of a query string) that decode but do not point anywhere
    for forged in ("p=123", "p=abc", f"p={BIG}", "p=5.", "p=-1", "p=\x00", "p=\u00e9", "o=-5&p=1", "r=x&p=1",
                   "p=1&p=2"):
        cursor = base64.b64encode(forged.encode()).decode()
        check(client.get(url, {"cursor": cursor}), f"GET {url} cursor {forged!r}", failures)
    check(client.get(url, {"cursor": "%%%not-base64"}), f"GET {url} cursor not base64", failures)
    assert not failures, "\n".join(failures)


def test_names_read_sees_the_names_a_view_looks_up_and_a_walk_over_all(world):
    """The recorder the one-at-a-time requests rely on: were it blind, they would try nothing."""
    client = world["client"]
    with names_read() as read:
        client.get(fill("data/runs/<int:run_id>/logs/", world["ids"]), {"after": "1", "unrelated": "x"})
    assert {"after", "level"} <= read and "unrelated" not in read and EVERY_NAME not in read
    with names_read() as read:
        client.get("/healthz", {"step": "1"})
    assert read == set()
    with names_read() as read:  # a NUL anywhere: refused by the scan of every parameter, no view read
        client.get(fill("runs/<int:run_id>/", world["ids"]), {"step": "\x00"})
    assert EVERY_NAME not in read
    with names_read() as read:
        QueryDict("a=1&b=2").items()
    assert read == {EVERY_NAME}
    assert QueryDict.get is MultiValueDict.get and "__iter__" not in QueryDict.__dict__  # undone after


@pytest.mark.parametrize("route", [r for r in ROUTES if "<int:" in r])
def test_ids_beyond_a_columns_range_are_not_found(world, route):
    client = world["client"]
    failures: list[str] = []
    for value in (BIG, BIG31, str(2**63), str(2**63 - 1), "0", "9" * 40):
        url = fill(route, {k: (value if isinstance(v, int) else v) for k, v in world["ids"].items()})
        for method in ("get", "post"):
            check(getattr(client, method)(url), f"{method.upper()} {url}", failures)
    assert not failures, "\n".join(failures)


DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 100_000 + "1" + "}" * 100_000


def bodies(world) -> list[tuple[str, bytes | str, str]]:
    """(label, body, content type)."""
    dataset = world["dataset"].id
    run_body = {"team": "acme", "dataset": dataset, "name": "x", "config": {}}
    out: list[tuple[str, bytes | str, str]] = [
        ("deep list", DEEP, "application/json"),
        ("deep object", DEEP_OBJECT, "application/json"),
        ("deep config", json.dumps(run_body)[:-3] + DEEP + "}", "application/json"),
        ("NaN literal", '{"team": "acme", "dataset": NaN, "name": "x"}', "application/json"),
        ("Infinity literal", '{"team": "acme", "dataset": ' + str(dataset)
         + ', "name": "x", "config": {"steps": Infinity}}', "application/json"),
        ("not UTF-8", b'{"team": "\xff\xfe\xfa", "name": "x"}', "application/json"),
        ("latin-1 declared", b'{"team": "\xe9"}', "application/json; charset=latin-1"),
        ("unknown charset", b'{"team": "a"}', "application/json; charset=nope-42"),
        ("truncated", '{"team": "acme", ', "application/json"),
        ("empty", "", "application/json"),
        ("a list", "[1, 2]", "application/json"),
        ("a string", '"acme"', "application/json"),
        ("text", "team=acme", "text/plain"),
        ("xml", "<a/>", "application/xml"),
        ("no boundary", "--x\r\n", "multipart/form-data"),
        ("bad multipart", "garbage", "multipart/form-data; boundary=xyz"),
        ("form bad values", "team=acme&dataset=1e20&name=%ff&batch_size=nan&steps=1e30&method=hora",
         "application/x-www-form-urlencoded"),
        ("form not UTF-8", b"name=\xff\xfe&team=\xe9", "application/x-www-form-urlencoded"),
        ("form NUL", "name=a%00b&team=%00&username=%00&password=%00&key=%00&dataset=%00",
         "application/x-www-form-urlencoded"),
        ("form too many fields", "&".join(f"f{i}=1" for i in range(1200)), "application/x-www-form-urlencoded"),
    ]
    return out


def field_bodies(world) -> Iterator[tuple[str, str]]:
    """A run's fields (the only JSON body with named fields besides ingest) with what does not belong."""
    run_body = {"team": "acme", "dataset": world["dataset"].id, "name": "x", "config": {}}
    for value in (int(BIG), "1e20", 1e30, -1, "nan", [1], True, None, "x" * 300, "a\x00b"):
        for key in ("dataset", "baseline", "team", "name", "config"):
            yield f"{key}={value!r:.40}", json.dumps({**run_body, key: value})


# Values that do not belong where a number, a choice or a name does (run config fields and method params).
CONFIG_VALUES: tuple[Any, ...] = ("Infinity", "NaN", "-1e999", 1e30, 2**70, [1], {"a": 1}, True, None,
                                  "x" * 10_000, -1)


def config_bodies(world) -> Iterator[tuple[str, dict[str, Any]]]:
    from workers.engines.config import RunConfig
    from workers.selection.registry import REGISTRY

    base = {"team": "acme", "dataset": world["dataset"].id, "name": "bad-config"}
    for field in RunConfig.describe():
        for value in CONFIG_VALUES:
            yield f"config.{field['name']}={value!r:.40}", {**base, "config": {field["name"]: value}}
    for method, cls in REGISTRY.items():
        for param in cls.Params.describe():
            for value in CONFIG_VALUES:
                yield (f"selectors.{method}.{param['name']}={value!r:.40}",
                       {**base, "config": {"selectors": {method: {param["name"]: value}}}})
        for value in CONFIG_VALUES[:10]:
            yield f"selectors.{method}={value!r:.40}", {**base, "config": {"selectors": {method: value}}}


@pytest.mark.parametrize("route", ROUTES)
def test_malformed_bodies_answer_4xx_with_a_message(world, route):
    client, url = world["client"], fill(route, world["ids"])
    failures: list[str] = []
    for method in ("post", "put"):
        for label, body, content_type in bodies(world):
            # generic(): the body goes as given (post() would re-encode it by the declared charset)
            check(client.generic(method.upper(), url, data=body, content_type=content_type),
                  f"{method.upper()} {url} {label}", failures)
    for label, body in field_bodies(world):
        check(client.post(url, data=body, content_type="application/json"), f"POST {url} {label}", failures)
    assert not failures, "\n".join(failures)


def test_every_run_config_field_and_method_parameter_refuses_what_does_not_belong(world):
    """The API: a 400 naming the field for each wrong type or out-of-range value, never a 500."""
    client = world["client"]
    failures: list[str] = []
    for label, body in config_bodies(world):
        response = client.post("/api/runs/", data=json.dumps(body), content_type="application/json")
        check(response, f"POST /api/runs/ {label}", failures)
    assert not failures, "\n".join(failures[:60]) + f"\n({len(failures)} in all)"


def test_the_new_run_form_refuses_what_does_not_belong(world):
    """The browser's form posts text: each field with a value that is not its kind is a 400 page."""
    from frontend.forms import NewRunForm

    client = world["client"]
    form = NewRunForm.blank()
    names = [f.name for f in form.fields] + [p.name for m in form.methods for p in m.params]
    methods = [m.name for m in form.methods]
    failures: list[str] = []
    for name in names:
        for value in ("Infinity", "nan", "1e30", BIG, "1e400", "x" * 5000, "\x00"):
            data = {"name": "f", "dataset": str(world["dataset"].id), "method": methods, name: value}
            check(client.post("/runs/new/", data), f"POST /runs/new/ {name}={value!r:.30}", failures)
    assert not failures, "\n".join(failures[:60]) + f"\n({len(failures)} in all)"


def test_the_ingest_endpoint_answers_malformed_bodies_with_4xx(world):
    """The one endpoint that takes a run token, not a member: the same bodies, as the run's engine."""
    from controlplane.telemetry.services import token_issue

    engine = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"RunToken {token_issue(run_id=world['run'].id)}")
    url = f"/api/ingest/runs/{world['run'].id}/steps/"
    failures: list[str] = []
    for label, body, content_type in bodies(world):
        check(engine.generic("POST", url, data=body, content_type=content_type), f"POST {url} {label}", failures)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_answers_a_browser_without_a_500(world, route):
    """A signed-in browser (Accept: text/html) opening any route: the browsable API's list pages
    asked their views for a queryset they did not have, a 500."""
    response = world["client"].get(fill(route, world["ids"]), HTTP_ACCEPT="text/html,application/xhtml+xml")
    assert response.status_code < 500, f"GET {route} as a browser: {response.status_code}"
