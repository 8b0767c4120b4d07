"""The run page's data at the resolution a chart shows: ?points= (one request, downsampled),
?until= (a zoomed window), the cursor poll (new steps only), and the heat map by prompt
(frontend.charts.heatmap_prompts / prompt_heatmap and its endpoint)."""

from __future__ import annotations

import pytest

from frontend import charts
from tests.frontend.conftest import KEYS

# -- the heat map's rows: shaping ---------------------------------------------------------------------------

STATS = [  # (key, observations, first pass rate, last pass rate)
    ("p/b", 5, 0.0, 0.5),
    ("p/a", 5, 1.0, 0.5),  # the same |change| and observations as p/b: the key decides
    ("p/c", 9, 0.25, 0.25),
    ("p/once", 1, 0.5, 0.5),  # one observation: no change
    ("p/big", 3, 0.0, 1.0),
    ("p/none", 4, None, None),  # no pass rate recorded: no change
]


def test_most_active_orders_by_observations_then_key():
    page = charts.heatmap_prompts(STATS, order="active")
    assert page["rows"] == ["p/c", "p/a", "p/b", "p/none", "p/big", "p/once"]
    assert page["row_observations"] == [9, 5, 5, 4, 3, 1] and page["total"] == 6


def test_most_changed_orders_by_the_size_of_the_change_and_puts_prompts_without_one_last():
    page = charts.heatmap_prompts(STATS, order="changed")
    assert page["rows"] == ["p/big", "p/a", "p/b", "p/c", "p/none", "p/once"]
    assert page["row_change"] == [1.0, -0.5, 0.5, 0.0, None, None]


def test_pages_and_search_and_an_empty_run():
    page = charts.heatmap_prompts(STATS, order="active", offset=2, limit=2)
    assert page["rows"] == ["p/b", "p/none"] and page["offset"] == 2 and page["total"] == 6
    assert charts.heatmap_prompts(STATS, order="active", offset=6)["rows"] == []
    found = charts.heatmap_prompts(STATS, order="changed", search="P/B")
    assert found["rows"] == ["p/big", "p/b"] and found["total"] == 2
    empty = charts.heatmap_prompts([], order="changed")
    assert empty["rows"] == [] and empty["total"] == 0
    with pytest.raises(ValueError, match="order must be one of active, changed"):
        charts.heatmap_prompts(STATS, order="newest")


def test_the_heat_map_has_every_column_and_the_rows_in_the_order_given():
    cells = [("p/a", 2, 0.5, 3), ("p/b", 0, 1.0, 1), ("p/zz", 1, 0.0, 2), ("p/b", 3, 0.25, 2)]
    data = charts.prompt_heatmap(cells, ["p/b", "p/a"], steps_per_column=5, first_step=0, last_step=19)
    assert data["step"] == [0, 5, 10, 15] and data["steps_per_column"] == 5
    assert data["z"] == [[1.0, None, None, 0.25], [None, None, 0.5, None]]  # p/zz is not on this page
    assert data["observations"] == [[1, 0, 0, 2], [0, 0, 3, 0]]
    assert charts.prompt_heatmap(cells, ["p/b"], 5, first_step=20, last_step=19)["step"] == []


# -- the endpoints ------------------------------------------------------------------------------------------------


def test_one_request_sends_the_whole_series_downsampled_and_says_so(bob, run):
    url = f"/data/runs/{run.id}/series/"
    full = bob.get(url).json()
    assert full["step"] == [0, 1, 2, 3, 4, 5] and "downsampled" not in full
    cut = bob.get(url, {"points": 4}).json()
    assert (cut["downsampled"], cut["points_from"], cut["points_sent"]) == (True, 6, 4)
    assert cut["step"] == [0, 1, 4, 5] and cut["has_more"] is False and cut["next_after"] == 5
    total = full["rollouts_generated_total"]
    assert cut["rollouts_generated_total"] == [total[0], total[1], total[4], total[5]]  # a rising total: its ends
    share = full["all_correct_share"]
    assert max(share[1:5]) in cut["all_correct_share"] and min(share[1:5]) in cut["all_correct_share"]
    assert bob.get(url, {"points": 600}).json()["downsampled"] is False


def test_the_cursor_poll_still_returns_only_the_new_steps_with_totals_continued(bob, run):
    url = f"/data/runs/{run.id}/series/"
    full = bob.get(url, {"points": 600}).json()
    poll = bob.get(url, {"after": 3}).json()
    assert poll["step"] == [4, 5] and poll["next_after"] == 5 and "downsampled" not in poll
    assert poll["rollouts_generated_total"] == full["rollouts_generated_total"][4:]
    assert bob.get(url, {"after": 5}).json()["step"] == []


def test_a_zoomed_window_comes_at_full_resolution_with_its_totals(bob, run):
    url = f"/data/runs/{run.id}/series/"
    full = bob.get(url).json()
    window = bob.get(url, {"after": 1, "until": 3, "points": 100}).json()
    assert window["step"] == [2, 3] and window["downsampled"] is False and window["has_more"] is True
    assert window["rollouts_generated_total"] == full["rollouts_generated_total"][2:4]
    for params, message in (({"until": 3}, "until needs points"), ({"after": 3, "until": 3, "points": 9},
                                                                    "until must be after the cursor"),
                            ({"points": -1}, "points")):
        answer = bob.get(url, params)
        assert answer.status_code == 400 and message in answer.json()["errors"]["parameters"][0], params


def test_decision_counts_and_hora_allocations_in_one_request(bob, run):
    actions = f"/data/runs/{run.id}/actions/"
    full = bob.get(actions).json()
    cut = bob.get(actions, {"points": 4}).json()
    assert cut["downsampled"] is True and cut["step"] == [0, 1, 4, 5] and set(cut["counts"]) == set(full["counts"])
    assert bob.get(actions, {"after": 4}).json()["step"] == [5]  # the poll
    hora = f"/data/runs/{run.id}/hora/"
    steps = bob.get(hora).json()
    binned = bob.get(hora, {"points": 3}).json()
    assert binned["steps_per_column"] == 2 and binned["step"] == [0, 2, 4] and binned["downsampled"] is True
    for s in range(len(steps["successes"])):  # prompts summed over each column's two steps
        assert binned["prompts"][s] == [steps["prompts"][s][i] + steps["prompts"][s][i + 1] for i in (0, 2, 4)]


def test_the_heatmap_ranks_prompts_and_its_poll_keeps_the_rows(bob, mallory, run):
    url = f"/data/runs/{run.id}/heatmap/"
    first = bob.get(url).json()  # the four prompts rolled out each step: a tie, by key
    assert first["rows"] == KEYS[:4] and first["row_observations"] == [6] * 4 and first["total"] == 4
    assert first["step"] == [0, 1, 2, 3, 4, 5] and first["ranked_through"] == 5
    assert first["z"][0] == [0.0, 0.25, 0.5, 0.75, 1.0, 0.0]  # KEYS[0]: (0 + step) % 5 of 4
    # since step 2: KEYS[3] went 0 -> 3/4 (the largest change), the others down by 1/2
    changed = bob.get(url, {"order": "changed", "since": 2}).json()
    assert changed["rows"][0] == KEYS[3] and changed["row_change"][0] == 0.75 and changed["step"][0] == 2
    assert changed["row_change"][1:] == [-0.5, -0.5, -0.5] and changed["rows"][1:] == KEYS[:3]
    assert bob.get(url, {"q": "ADD:5"}).json()["rows"] == [KEYS[1]]
    paged = bob.get(url, {"offset": 2, "limit": 1}).json()
    assert paged["rows"] == [KEYS[2]] and paged["z"] == [first["z"][2]]
    poll = bob.get(url, {"after": 5, "ranked_through": 5}).json()
    assert poll["step"] == [] and "rows" not in poll and poll["next_after"] == 5
    assert bob.get(url, {"order": "newest"}).status_code == 400
    assert mallory.get(url).status_code == 404


def test_a_step_written_again_is_not_served_from_the_first_reads_cache(bob, run):
    from controlplane.telemetry.services import step_ingest
    from tests.frontend.helpers import step_record

    actions, heatmap = f"/data/runs/{run.id}/actions/", f"/data/runs/{run.id}/heatmap/"
    before = bob.get(actions, {"points": 600}).json()
    assert bob.get(heatmap).json()["total"] == 4
    step_ingest(run_id=run.id, record=step_record(5, KEYS[:4] + KEYS[4:6]))  # the newest step, retried
    after = bob.get(actions, {"points": 600}).json()
    assert after["counts"] != before["counts"]
    ranked = bob.get(heatmap).json()
    assert ranked["total"] == 6 and set(ranked["rows"][:4]) == set(KEYS[:4])  # 6 observations each, first
