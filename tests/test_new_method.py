"""An eighth method is its own module and one ``register`` call: the composition check, the
pipeline, the run form, the chart legends and both engines pick it up.

The method, defined here as a new method's module would define it: a random-skip baseline
at the pre-rollout layer (each candidate skipped with probability ``skip``), the control
arm of the history filters' skipping.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pytest

from tests.selection.simulated import Simulation
from workers.selection.decisions import Action, Layer
from workers.selection.panels import Panel, Series
from workers.selection.params import MethodParams, SelectionConfigError
from workers.selection.pipeline import Pipeline
from workers.selection.registry import REGISTRY, register, unregister
from workers.selection.selector import (
    Conflict,
    Ints,
    Mask,
    PipelineView,
    Selector,
    StepView,
    Verdict,
)

try:  # the verl contract tests' TransferQueue fixtures (tests/engines/verl/conftest.py)
    from tests.engines.verl.conftest import local_tq, tq  # noqa: F401
except ImportError:  # pragma: no cover
    pass

B, N = 8, 4


# -- the method's module ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RandomSkipParams(MethodParams):
    method: ClassVar[str] = "random_skip"
    skip: float = field(default=0.25, metadata={"help": "probability that a candidate is skipped unseen"})

    def check(self) -> None:
        self._require(0 <= self.skip < 1, "skip", f"must lie in [0, 1), got {self.skip}")


class RandomSkip(Selector[RandomSkipParams]):
    name = "random_skip"
    label = "Random skip"
    help = "Skips each candidate with a fixed probability: the control arm of history-based skipping."
    layers = frozenset({Layer.PRE_ROLLOUT})
    Params = RandomSkipParams
    reasons: ClassVar[Mapping[str, tuple[Action, str]]] = {
        "random_skip.skipped": (Action.SKIPPED, "skipped at random: draw {draw:.3f} < skip {skip:.2f}"),
        "random_skip.kept": (Action.KEPT, "kept at random: draw {draw:.3f} >= skip {skip:.2f}"),
    }
    conflicts = (Conflict("greso", "greso and random_skip both skip prompts before rollout, and random_skip is "
                                   "GRESO's control arm: compare them in two runs"),)
    panels = (Panel("skipped", "Candidates skipped at random", (
        Series("skipped", metric="random_skip/skipped", style="bar"),)),)

    def composition_errors(self, pipeline: PipelineView) -> list[SelectionConfigError]:
        if self.params.skip * pipeline.batch_size > pipeline.batch_size - 1:
            return [SelectionConfigError("random_skip.skip", f"skips {self.params.skip:.0%} of candidates: fewer "
                                         f"than one in B = {pipeline.batch_size} is kept; lower random_skip.skip")]
        return []

    def screen(self, step: StepView, keys: list[str], slots: Ints, keep: Mask) -> Verdict:
        keep = keep.copy()
        idx = np.flatnonzero(keep)
        draw = step.rng.random(idx.size)
        skipped = draw < self.params.skip
        keep[idx[skipped]] = False
        decisions = tuple(
            self.decision(step.step, keys[i], Layer.PRE_ROLLOUT,
                          "random_skip.skipped" if s else "random_skip.kept",
                          {"draw": float(d), "skip": self.params.skip})
            for i, d, s in zip(idx, draw, skipped)
        )
        return Verdict(keep=keep, decisions=decisions, added={"random_skip/skipped": int(skipped.sum())})


@pytest.fixture
def random_skip():
    register(RandomSkip)
    yield RandomSkip
    unregister(RandomSkip.name)


# -- registry and composition -----------------------------------------------------------------------


def test_its_savings_are_measured_against_what_its_layer_is_measured_against(random_skip):
    # a pre-rollout filter: against dynamic sampling, like GRESO and HIVE (docs/savings.md)
    assert Pipeline({"random_skip": {}}, batch_size=B, group_size=N).yardsticks() == ["uniform", "dynamic_sampling"]


def test_registering_adds_it_after_the_built_ins_and_unregistering_forgets_it(random_skip):
    assert list(REGISTRY) == ["grpo", "dapo", "greso", "hive", "hora", "rlzvp", "lze", "random_skip"]
    with pytest.raises(ValueError, match="registered already"):
        register(RandomSkip)
    unregister("random_skip")
    with pytest.raises(SelectionConfigError, match="unknown method 'random_skip'"):
        Pipeline(["random_skip"], batch_size=B, group_size=N)
    register(RandomSkip)  # the fixture unregisters it


def test_the_composition_check_accepts_it_beside_methods_of_every_layer(random_skip):
    pipeline = Pipeline({"random_skip": {"skip": 0.5}, "hive": {}, "hora": {"n0": 2}, "lze": {"prune": True}},
                        batch_size=B, group_size=N)
    assert pipeline.methods() == ["random_skip", "hive", "hora", "lze"]
    # LZE's pruner (priority 10) screens first, then the others in the run's order
    assert [s.name for s in pipeline.screeners] == ["lze", "random_skip", "hive"]
    assert pipeline.screening == "lze" and pipeline.allocator is not None and pipeline.probe_size == 2
    assert isinstance(pipeline.selectors["random_skip"].params, RandomSkipParams)


@pytest.mark.parametrize(("methods", "field_name", "fix"), [
    (["random_skip", "greso"], "selectors", "GRESO's control arm"),
    ({"random_skip": {"skip": 0.9}}, "random_skip.skip", "lower random_skip.skip"),
    ({"random_skip": {"skip": 1.0}}, "random_skip.skip", r"must lie in \[0, 1\)"),
    ({"random_skip": {"skipp": 0.1}}, "random_skip.skipp", "random_skip takes skip"),
])
def test_the_composition_check_enforces_the_constraints_it_declares(random_skip, methods, field_name, fix):
    with pytest.raises(SelectionConfigError, match=fix) as error:
        Pipeline(methods, batch_size=B, group_size=N)
    assert error.value.field == field_name


def test_every_composition_problem_is_reported_at_once(random_skip):
    with pytest.raises(SelectionConfigError) as error:
        Pipeline({"random_skip": {"skip": 0.9}, "greso": {}, "hora": {"n0": N}}, batch_size=B, group_size=N)
    assert [p.field for p in error.value.problems] == ["selectors", "random_skip.skip", "hora.n0"]
    assert error.value.field == "selectors"


# -- the pipeline ---------------------------------------------------------------------------------------


def test_the_pipeline_screens_with_it_and_records_its_reasons(random_skip):
    sim = Simulation({"random_skip": {"skip": 0.5}}, n_prompts=48, batch_size=B, group_size=N, seed=1)
    results = sim.run(3)
    for result, _ in results:
        reasons = [d.reason for d in result.decisions]
        skipped = [d for d in result.decisions if d.reason == "random_skip.skipped"]
        assert skipped and all(d.method == "random_skip" and d.action == Action.SKIPPED for d in skipped)
        assert all(d.scores["draw"] < 0.5 and "skipped at random" in d.message for d in skipped)
        assert result.metrics["random_skip/skipped"] == len(skipped)
        # every candidate drawn was rolled out, skipped with a decision, or given back
        drawn = result.metrics["selection/candidates_drawn"]
        assert drawn == B + len(skipped) + result.metrics["selection/candidates_deferred"]
        assert result.accounting.groups_generated == B  # the batch still fills
        # the uniform audit draws name the screening method
        assert all(d.method == "random_skip" for d in result.decisions if d.reason == "audit.uniform")
        assert "random_skip.kept" in reasons


# -- the frontend: the form, the legends, the run page's panel and its data ---------------------------------


def test_the_run_form_lists_it_with_its_parameter(random_skip):
    from frontend.forms import method_fields

    methods = {m.name: m for m in method_fields()}
    assert list(methods)[-1] == "random_skip" and methods["random_skip"].label == "Random skip"
    assert [p.name for p in methods["random_skip"].params] == ["selectors.random_skip.skip"]
    assert methods["random_skip"].params[0].default == 0.25


def test_the_chart_legends_and_series_name_it(random_skip):
    from frontend import charts

    assert charts.method_labels(["random_skip", "grpo"]) == [
        {"name": "grpo", "label": "GRPO"}, {"name": "random_skip", "label": "Random skip"}]
    assert "random_skip/skipped" in charts.method_metrics(["random_skip"])


def test_the_run_page_draws_its_panel_from_its_step_metrics(random_skip, acme, enqueued):
    from django.contrib.auth import get_user_model
    from django.test import Client

    from controlplane.datasets.services import dataset_import_builtin
    from controlplane.runs.services import run_claim, run_create
    from controlplane.telemetry.services import step_ingest
    from tests.controlplane.api.helpers import step_record

    dataset = dataset_import_builtin(team=acme, task="add", n_train=12, n_test=4, name="add-small")
    run = run_create(team=acme, dataset=dataset, name="random-skip",
                     config={"steps": 2, "batch_size": 4, "group_size": 4, "selectors": {"random_skip": {"skip": 0.5}}})
    run_claim(run_id=run.id, worker="t")
    keys = [f"edgeplane/add:{i}" for i in range(4, 8)]
    for step in range(2):
        step_ingest(run_id=run.id,
                    record=step_record(step, keys, extra_summary={"metrics": {"random_skip/skipped": 3.0 + step}}))
    client = Client()
    client.force_login(get_user_model().objects.get(username="bob"))
    page = client.get(f"/runs/{run.id}/").content.decode()
    assert '<div class="method-panel" data-method="random_skip">' in page and "<h3>Random skip</h3>" in page
    assert ('<figcaption>Candidates skipped at random</figcaption><div class="chart" id="chart-random_skip-skipped">'
            in page)
    data = client.get(f"/data/runs/{run.id}/series/").json()
    assert data["metrics"]["random_skip/skipped"] == [3, 4]


# -- the engines -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_local_engine_trains_two_steps_with_it(random_skip, tmp_path):
    from tests.engines.local.conftest import TINY
    from workers.engines.config import RunConfig
    from workers.engines.local.engine import LocalEngine
    from workers.engines.telemetry import JsonlSink, read_events
    from workers.record import RunStatus

    config = RunConfig.from_mapping({**TINY, "steps": 2, "selectors": {"random_skip": {"skip": 0.5}}})
    sink = JsonlSink(tmp_path / "run")
    engine = LocalEngine(config, tmp_path / "run", sink, var_dir=tmp_path / "var")
    assert engine.run() == RunStatus.SUCCEEDED
    steps = [e for e in read_events(sink.path) if e["event"] == "step"]
    assert [s["step"] for s in steps] == [0, 1]
    decisions = [d for s in steps for d in s["decisions"]]
    skipped = [d for d in decisions if d["reason"] == "random_skip.skipped"]
    assert skipped and all(d["method"] == "random_skip" and d["action"] == "skipped" for d in skipped)
    assert all(d["layer"] == "pre_rollout" and d["message"].startswith("skipped at random") for d in skipped)
    for s in steps:
        step_skipped = [d for d in s["decisions"] if d["reason"] == "random_skip.skipped"]
        m = s["summary"]["metrics"]
        assert m["random_skip/skipped"] == len(step_skipped)
        assert m["selection/candidates_drawn"] == (s["summary"]["groups_generated"] + len(step_skipped)
                                                   + m["selection/candidates_deferred"])


@dataclass(frozen=True)
class SignParams(MethodParams):
    method: ClassVar[str] = "sign_advantage"


class SignAdvantage(Selector[SignParams]):
    """An advantage method the verl engine has no adapter for."""

    name = "sign_advantage"
    label = "Sign advantage"
    help = "The sign of the GRPO advantage."
    layers = frozenset({Layer.ADVANTAGE})
    Params = SignParams


def test_verl_launch_accepts_it_and_names_a_method_it_cannot_run(random_skip):
    pytest.importorskip("verl")
    from workers.engines.config import RunConfig
    from workers.engines.verl.launch import VerlOptions, check_supported
    from workers.engines.verl.methods import unsupported

    config = RunConfig.from_mapping({"engine": "verl", "batch_size": 4, "group_size": 4, "minibatches": 2,
                                     "device": "cpu", "selectors": {"random_skip": {}, "dapo": {}}})
    check_supported(config, VerlOptions(run_dir="/tmp/unused"))
    assert unsupported({"random_skip": {}, "hive": {}, "rlzvp": {}}) == []
    register(SignAdvantage)
    try:
        [problem] = unsupported({"random_skip": {}, "sign_advantage": {}})
    finally:
        unregister("sign_advantage")
    assert problem.startswith("sign_advantage: not run by the verl engine")
    assert "advantage layer" in problem and "grpo, rlzvp" in problem and "local engine" in problem


@pytest.mark.slow
def test_the_verl_trainers_selection_runs_it(random_skip, tmp_path, tq):
    pytest.importorskip("verl")
    from tests.engines.verl.harness import char_tokenizer, run_step, trainer_for

    trainer = trainer_for(tmp_path, char_tokenizer(tmp_path / "tokenizer"), {"random_skip": {"skip": 0.5}})
    assert trainer.replay_buffer.filter_groups_metric is None  # no post-filter
    skipped_total = 0
    for _ in range(2):
        calls_before = len(trainer.agent_loop_manager.submitted)
        result, trained, _ = run_step(trainer, tq)
        submitted = {k for call in trainer.agent_loop_manager.submitted[calls_before:] for k in call}
        skipped = {d.prompt_key for d in result.decisions if d.reason == "random_skip.skipped"}
        assert not skipped & submitted
        assert result.metrics["random_skip/skipped"] == len(skipped)
        assert len(trained) == 4
        skipped_total += len(skipped)
    assert skipped_total > 0


def test_a_run_config_reports_every_composition_problem_beside_its_field(random_skip):
    from workers.engines.config import ConfigError, RunConfig

    with pytest.raises(ConfigError) as error:
        RunConfig.from_mapping({"batch_size": 8, "group_size": 4,
                                "selectors": {"random_skip": {"skip": 0.9}, "greso": {}, "hora": {"n0": 4}}})
    errors = error.value.as_dict()
    assert "GRESO's control arm" in errors["selectors"][0]
    assert "lower random_skip.skip" in errors["selectors.random_skip.skip"][0]
    assert "lower hora.n0 or raise N" in errors["selectors.hora.n0"][0]


def test_a_second_method_at_an_exclusive_layer_is_refused(random_skip):
    @dataclass(frozen=True)
    class CoinParams(MethodParams):
        method: ClassVar[str] = "coin_allocation"

    class CoinAllocation(Selector[CoinParams]):
        name = "coin_allocation"
        label = "Coin allocation"
        help = "Allocates the extra rollouts by a coin flip."
        layers = frozenset({Layer.ALLOCATION})
        Params = CoinParams

    register(CoinAllocation)
    try:
        with pytest.raises(SelectionConfigError, match="hora and coin_allocation are both the run's allocation"):
            Pipeline({"hora": {"n0": 2}, "coin_allocation": {}}, batch_size=B, group_size=N)
    finally:
        unregister("coin_allocation")
