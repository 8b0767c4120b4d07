"""The New run form: what it shows (every RunConfig field and method parameter, with its
default and help, read from the config and the selection registry) and how a posted form
becomes a config mapping for ``run_create``.

Input names: a RunConfig field by its name (``batch_size``); a method is the checkbox
``method`` with value ``hora``; its parameters ``selectors.hora.n0`` - the same names
``RunConfig`` uses in its errors, so every error lands beside its field.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

from django.core.exceptions import BadRequest
from django.http import HttpRequest, QueryDict

from controlplane.api.serializers import PATH_SETTINGS, path_problem

# The ranges of the columns a parameter ends up compared with: a step (PositiveIntegerField)
# and an id (bigint). A number past them is refused here, not by the database with a 500.
STEP_MAX = 2**31 - 1
ID_MAX = 2**63 - 1
INT_MIN, INT_MAX = -(2**63), 2**63 - 1  # a whole number in a run config


class BadParameter(ValueError):
    pass


def int_param(raw: str, name: str, minimum: int = -1, maximum: int = STEP_MAX) -> int:
    """A query parameter as a whole number in [minimum, maximum], or BadParameter saying why."""
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise BadParameter(f"{name} must be a whole number, got {raw!r}")
    if len(text) > 20 or not minimum <= int(text) <= maximum:
        raise BadParameter(f"{name} must be a whole number from {minimum} to {maximum}, got {raw!r}")
    return int(text)


def id_or_none(raw: str | None) -> int | None:
    """An id as posted or queried (1 .. 2**63-1), None when it is not one."""
    try:
        return int_param(raw or "", "id", minimum=1, maximum=ID_MAX)
    except BadParameter:
        return None


def malformed_input(request: HttpRequest) -> str | None:
    """What makes a request's query or form unusable anywhere, or None: a NUL character (no
    text column takes one)."""
    for where, data in (("query parameter", request.GET), ("form field", request.POST)):
        for name, values in data.lists():
            if "\x00" in name or any("\x00" in v for v in values):
                return f"the {where} {name!r} holds a NUL character; send text without it"
    return None


def refuse_malformed(view: Callable) -> Callable:
    """A view that answers 400 (handler400: JSON under /data/, a page elsewhere) for a request
    ``malformed_input`` refuses, before the view reads it."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        problem = malformed_input(request)
        if problem:
            raise BadRequest(problem)
        return view(request, *args, **kwargs)

    return wrapper

# Shown first; the rest of RunConfig sits under "More settings".
MAIN_FIELDS = ("engine", "device", "model", "batch_size", "group_size", "steps", "seed")
# Set by the control plane from the run's dataset, never by the form.
HIDDEN_FIELDS = ("dataset", "eval_dataset", "selectors", "task", "task_train_size", "task_test_size", "task_levels")
LABELS = {"batch_size": "B (prompts per step)", "group_size": "N (rollouts per prompt)", "steps": "Steps",
          "seed": "Seed", "engine": "Engine", "device": "Device", "model": "Model"}
# Help the form adds to RunConfig's own, where a choice means more on the dashboard.
MORE_HELP = {"device": "with engine verl, cpu runs verl's own training loop on this machine with the tiny model "
                       "(a small Llama built here): a smoke run before spending GPU-hours"}


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "float"
    return "str"


def _choices(name: str) -> list[str] | None:
    from workers.engines.config import DEVICES, ENGINES
    from workers.problems.verifiers import VERIFIERS

    return {"engine": list(ENGINES), "device": list(DEVICES), "verifier": list(VERIFIERS),
            "post_filter": ["auto", "on", "off"], "gate": ["median", "band"],
            "momentum": ["abs", "signed"]}.get(name)


@dataclass
class Field:
    name: str  # the input's name, also the key of its errors
    label: str
    default: Any
    help: str
    kind: str  # bool, int, float, str
    choices: list[str] | None = None
    value: Any = None  # what the form shows (the posted value, else the default)
    errors: list[str] = field(default_factory=list)

    @property
    def shown(self) -> str:
        return _show(self.default if self.value is None else self.value, self.default)

    @property
    def default_shown(self) -> str:
        return _show(self.default, self.default)


def _show(value: Any, default: Any = None) -> str:
    """A value as the form shows it: floats to 6 significant digits (0.0833333, not
    0.08333333333333333) where that reads back as the value or it is the default (``bind``
    reads a shown default back as the default itself); else exactly (a cloned 1/3 stays 1/3)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        short = f"{value:.6g}"
        return short if float(short) == value or _same(value, default) else repr(value)
    return str(value)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, float) and isinstance(value, float):
        return math.isclose(value, default, rel_tol=1e-5, abs_tol=1e-12)
    return value == default


@dataclass
class Method:
    name: str
    label: str
    help: str
    params: list[Field]
    checked: bool = False
    errors: list[str] = field(default_factory=list)
    unavailable: str = ""  # why the chosen engine cannot run it (shown disabled), else empty
    note: str = ""  # what ticking it would break, given the methods ticked now


@dataclass(frozen=True)
class Problem:
    """One problem of the form, for the summary at its top: the input it belongs to (its
    ``data-field``), that input in words, and what is wrong with the fix."""

    field: str
    label: str
    message: str


def config_fields() -> list[Field]:
    from workers.engines.config import RunConfig

    return [Field(name=d["name"], label=LABELS.get(d["name"], d["name"]), default=d["default"],
                  help="; ".join(filter(None, (d["help"], MORE_HELP.get(d["name"])))),
                  kind=_kind(d["default"]), choices=_choices(d["name"]))
            for d in RunConfig.describe() if d["name"] not in HIDDEN_FIELDS]


def form_suggestions() -> dict[str, Any]:
    """Values the blank form starts a method's parameter at, where the method's own default (the
    API's, SELECTORS.md's) cannot run at the form's default settings. HORA probes 8 of N = 32 in
    the paper; at the run's default N = 8 that leaves nothing to allocate, so the form starts n0 at
    the paper's quarter of N, and ticking HORA on a blank form composes."""
    from workers.engines.config import RunConfig

    group_size = next(d["default"] for d in RunConfig.describe() if d["name"] == "group_size")
    return {"selectors.hora.n0": max(1, int(group_size) // 4)}


def method_fields() -> list[Method]:
    from workers.selection.registry import REGISTRY

    suggested = form_suggestions()
    methods = []
    for name, cls in REGISTRY.items():  # the registry's order
        params = [Field(name=f"selectors.{name}.{p['name']}", label=p["name"], default=p["default"], help=p["help"],
                        kind=_kind(p["default"]), choices=p.get("choices") or _choices(p["name"]),
                        value=suggested.get(f"selectors.{name}.{p['name']}"))
                  for p in cls.Params.describe()]
        methods.append(Method(name=name, label=cls.label, help=cls.help, params=params))
    return methods


def _convert(raw: str, kind: str) -> tuple[Any, str]:
    """A posted string as the field's type, or an error that says what to type."""
    text = raw.strip()
    if kind == "bool":
        if text.lower() in ("true", "on", "1", "yes"):
            return True, ""
        if text.lower() in ("false", "off", "0", "no", ""):
            return False, ""
        return raw, f"must be true or false, got {raw!r}"
    if kind == "int":
        try:
            value = int(text)
        except ValueError:
            return raw, f"must be a whole number, got {raw!r}"
        if not INT_MIN <= value <= INT_MAX:
            return raw, f"must be a whole number from {INT_MIN} to {INT_MAX}, got {raw!r}"
        return value, ""
    if kind == "float":
        try:
            number = float(text)
        except ValueError:
            return raw, f"must be a number, got {raw!r}"
        if not math.isfinite(number):  # nan, inf and 1e400 are no setting, and no JSON either
            return raw, f"must be a finite number, got {raw!r}"
        return number, ""
    return raw, ""


@dataclass
class NewRunForm:
    """The form's state: fields with values and errors, methods, and errors that belong to
    no single field (shown above the button)."""

    fields: list[Field]
    methods: list[Method]
    name: str = ""
    dataset: str = ""
    baseline: str = ""  # the id of a run of the team to compare against; empty: none
    tags: str = ""  # as typed: labels separated by commas or spaces (controlplane.runs.tags)
    # Sent back with the form: a second post of the same page (a double click, a resubmit after a
    # lost answer) finds the run the first one launched instead of launching another.
    idempotency_key: str = field(default_factory=lambda: uuid.uuid4().hex)
    general_errors: list[str] = field(default_factory=list)
    name_errors: list[str] = field(default_factory=list)
    tags_errors: list[str] = field(default_factory=list)
    dataset_errors: list[str] = field(default_factory=list)
    baseline_errors: list[str] = field(default_factory=list)
    methods_errors: list[str] = field(default_factory=list)  # about the combination of methods
    budget_errors: list[str] = field(default_factory=list)  # the team's budget cannot pay for the run
    problems: list[Problem] = field(default_factory=list)  # every error above, in the page's order
    advice: list[str] = field(default_factory=list)  # hints on the form's current state (frontend/new_run.py)

    @classmethod
    def blank(cls, default_methods: tuple[str, ...] | None = None) -> NewRunForm:
        """The form with its defaults; ticked: ``default_methods``, else RunConfig's default selectors."""
        form = cls(fields=config_fields(), methods=method_fields())
        if default_methods is None:
            from workers.engines.config import RunConfig

            default_methods = tuple(next(d["default"] for d in RunConfig.describe() if d["name"] == "selectors"))
        for method in form.methods:
            method.checked = method.name in default_methods
        return form

    @property
    def main_fields(self) -> list[Field]:
        by_name = {f.name: f for f in self.fields}
        return [by_name[n] for n in MAIN_FIELDS]

    @property
    def more_fields(self) -> list[Field]:
        return [f for f in self.fields if f.name not in MAIN_FIELDS]

    def bind(self, data: QueryDict) -> tuple[dict[str, Any], dict[str, list[str]]]:
        """Read the posted values into the form; return (config mapping, conversion errors)."""
        self.name = data.get("name", "").strip()
        self.dataset = data.get("dataset", "")
        self.baseline = data.get("baseline", "").strip()
        self.tags = data.get("tags", "").strip()
        self.idempotency_key = data.get("idempotency_key", "")
        errors: dict[str, list[str]] = {}
        config: dict[str, Any] = {}
        for f in self.fields:
            if f.name not in data:
                continue
            f.value, problem = _convert(data[f.name], f.kind)
            if not problem and (f.name,) in PATH_SETTINGS and isinstance(f.value, str):
                problem = path_problem(f.value) or ""
            if problem:
                errors.setdefault(f.name, []).append(problem)
            elif not _same(f.value, f.default):  # the config keeps only what the user changed
                config[f.name] = f.value
        checked = set(data.getlist("method"))
        selectors: dict[str, dict[str, Any]] = {}
        for method in self.methods:
            method.checked = method.name in checked
            refused = set()  # said here already: RunConfig does not judge them again
            for p in method.params:
                if p.name in data:
                    p.value, problem = _convert(data[p.name], p.kind)
                    if method.checked and problem:
                        errors.setdefault(p.name, []).append(problem)
                        refused.add(p.name)
            if method.checked:
                selectors[method.name] = {p.label: p.value for p in method.params if p.name not in refused
                                          and p.value is not None and not _same(p.value, p.default)}
        config["selectors"] = selectors
        return config, errors

    def place_errors(self, errors: dict[str, list[str]]) -> None:
        """Put each error beside its field; what matches no field goes above the button. Every
        error is also listed in ``problems``, in the order the page shows the fields."""
        self.problems = problems_in_order(self, errors)
        placed = set()
        for f in self.fields:
            if f.name in errors:
                f.errors = errors[f.name]
                placed.add(f.name)
        for method in self.methods:
            for p in method.params:
                if p.name in errors:
                    p.errors = errors[p.name]
                    placed.add(p.name)
            for key in (f"selectors.{method.name}",):
                if key in errors:
                    method.errors = errors[key]
                    placed.add(key)
        for key, target in (("name", self.name_errors), ("tags", self.tags_errors), ("dataset", self.dataset_errors),
                            ("baseline", self.baseline_errors), ("selectors", self.methods_errors),
                            ("budget", self.budget_errors)):
            if key in errors:
                target.extend(errors[key])
                placed.add(key)
        for key, messages in errors.items():
            if key in placed:
                continue
            self.general_errors.extend(f"{key}: {m}" for m in messages)

    @property
    def has_errors(self) -> bool:
        return bool(self.general_errors or self.name_errors or self.dataset_errors or self.baseline_errors
                    or self.methods_errors or self.budget_errors
                    or any(f.errors for f in self.fields)
                    or any(m.errors or any(p.errors for p in m.params) for m in self.methods))

    def value_of(self, name: str) -> Any:
        for f in self.fields:
            if f.name == name:
                return f.default if f.value is None else f.value
        raise KeyError(name)

    # -- cloning a run ----------------------------------------------------------------------
    def prefill(self, config: dict[str, Any]) -> list[str]:
        """Show a stored run config (RunConfig.to_dict() of a run) in the form: every field the
        form has, the methods and their parameters. Answers what could not be shown as it was
        (an unknown method, a value of the wrong kind); a method that conflicts with one ticked
        before it is left unticked, so the form never starts with a conflict, and said here."""
        from workers.selection.registry import REGISTRY

        notes: list[str] = []
        for f in self.fields:
            if f.name in config and config[f.name] is not None:
                f.value = config[f.name]
        methods = {m.name: m for m in self.methods}
        stored = config.get("selectors") or {}
        ticked: dict[str, dict[str, Any]] = {}
        group_size = config.get("group_size", self.value_of("group_size"))
        batch_size = config.get("batch_size", self.value_of("batch_size"))
        for name, params in (stored.items() if isinstance(stored, dict) else ()):
            method = methods.get(name)
            if method is None:
                notes.append(f"the run used the method {name!r}, which this server no longer has: it is left out")
                continue
            params = params if isinstance(params, dict) else {}
            # A value out of range shows beside its parameter, ticked; a conflict leaves it unticked.
            refused = {p.field.partition(".")[2] for p in REGISTRY[name].Params.problems(params)}
            usable = {k: v for k, v in params.items() if k not in refused}
            # a refused value is judged as the blank form would start it, which composes
            starts = {key.rpartition(".")[2]: v for key, v in form_suggestions().items()
                      if key.startswith(f"selectors.{name}.") and key.rpartition(".")[2] in refused}
            added = composition_added(ticked, name, {**usable, **starts}, batch_size=batch_size,
                                      group_size=group_size)
            if added:
                notes.append(f"{method.label} is left unticked: {added[0]}")
                continue
            ticked[name] = usable
            method.checked = True
            by_label = {p.label: p for p in method.params}
            for p in method.params:  # what the run left unset was the method's default, not the form's start
                p.value = None
            for key, value in params.items():
                if key in by_label:
                    by_label[key].value = value
                else:
                    notes.append(f"{method.label}'s parameter {key!r} is no longer one of its own: it is left out")
        for method in self.methods:
            method.checked = method.name in ticked
        return notes

    def as_data(self) -> QueryDict:
        """What the browser posts for the form as it stands (``bind`` reads it back)."""
        data = QueryDict(mutable=True)
        data.update({"name": self.name, "tags": self.tags, "dataset": self.dataset, "baseline": self.baseline,
                     "idempotency_key": self.idempotency_key})
        for f in self.fields:
            data[f.name] = f.shown
        for method in self.methods:
            if method.checked:
                data.appendlist("method", method.name)
            for p in method.params:
                data[p.name] = p.shown
        return data


def composition_added(ticked: dict[str, dict[str, Any]], name: str, params: dict[str, Any], *,
                      batch_size: Any, group_size: Any) -> list[str]:
    """The composition problems ticking ``name`` (with ``params``) would add to ``ticked``:
    the selection's own rules (workers/selection), asked, never copied here."""
    from workers.selection.pipeline import Pipeline

    b = batch_size if isinstance(batch_size, int) and batch_size >= 1 else 1
    n = group_size if isinstance(group_size, int) and group_size >= 2 else 2
    before = {(p.field, p.message) for p in Pipeline.problems(ticked, batch_size=b, group_size=n)}
    after = Pipeline.problems({**ticked, name: params}, batch_size=b, group_size=n)
    return [p.message for p in after if (p.field, p.message) not in before]


# Inputs of the page that are not RunConfig fields, in words, for the summary of problems.
OWN_LABELS = {"name": "Run name", "tags": "Tags", "dataset": "Dataset", "baseline": "Baseline run",
              "selectors": "Selection methods", "budget": "Budget"}


def problems_in_order(form: NewRunForm, errors: dict[str, list[str]]) -> list[Problem]:
    """Every error as a Problem, in the order the page shows its input (what matches none of
    them last, under its own name)."""
    order: list[tuple[str, str]] = [(n, OWN_LABELS[n]) for n in ("name", "tags", "dataset", "baseline")]
    order += [(f.name, f.label) for f in form.main_fields]
    order.append(("selectors", OWN_LABELS["selectors"]))
    for method in form.methods:
        order.append((f"selectors.{method.name}", method.label))
        order += [(p.name, f"{method.label} {p.label}") for p in method.params]
    order += [(f.name, f.label) for f in form.more_fields]
    order.append(("budget", OWN_LABELS["budget"]))
    known = dict(order)
    keys = [k for k, _ in order if k in errors] + [k for k in errors if k not in known]
    return [Problem(k, known.get(k, k), m) for k in keys for m in errors[k]]
