// The heat map of pass rate by prompt and step: one row a prompt, for the prompts that matter
// (most active or most changed, over the whole run or its last 100 steps), 50 at a time, the
// next 50 or a search by key one click away. The ranking is the server's
// (frontend/charts.py heatmap_prompts); the first answer says through which step it ranked, and
// the polls pass that back so the rows stay put while new columns come in.
import { Poller, withParams } from "./live.js";
import { appendColumns } from "./plots.js";

const ROWS = 50;
const WINDOW_STEPS = 100;
const HEAT_COLORS = [[0, "#dc2626"], [0.5, "#fde68a"], [1, "#16a34a"]];

export function startHeatmap({ url, promptUrl, draw, interval, onError, stepAxis, lastStep }) {
  const el = (id) => document.getElementById(id);
  const controls = { order: el("heat-order"), window: el("heat-window"), search: el("heat-search"),
                     prev: el("heat-prev"), next: el("heat-next") };
  const state = { order: "active", since: 0, q: "", offset: 0 };
  let heat = {};
  let poller = null;
  let generation = 0;

  function drawHeat() {
    if (!heat.rows) return;
    const w = heat.steps_per_column || 1;
    const rows = heat.rows.length;
    draw("chart-heatmap", [{
      x: heat.step, y: heat.rows, z: heat.z, customdata: heat.observations, type: "heatmap", zmin: 0, zmax: 1,
      colorscale: HEAT_COLORS, hoverongaps: false, colorbar: { title: { text: "pass rate" }, thickness: 12 },
      hovertemplate: `%{y}<br>${w > 1 ? `${w} steps from step %{x}` : "step %{x}"}: pass rate %{z:.2f} `
        + "(%{customdata} groups)<extra>click: open the prompt</extra>",
    }], { height: Math.max(260, Math.min(13 * rows + 100, 760)), hovermode: "closest",
          // room for the longest key at 10 px (about 6 px a character), without automargin's second draw
          margin: { l: Math.min(320, 16 + 6 * Math.max(8, ...heat.rows.map((k) => String(k).length))) },
          xaxis: stepAxis, yaxis: { type: "category", autorange: "reversed", automargin: false, tickfont: { size: 10 } } });
    const chart = el("chart-heatmap");
    if (chart.on && !chart.dataset.heatWired) {
      chart.dataset.heatWired = "1";
      chart.on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        if (!point) return;
        // the row's key as written (the drawn labels are escaped copies)
        const row = Array.isArray(point.pointNumber) ? point.pointNumber[0] : point.pointIndex && point.pointIndex[0];
        const key = heat.rows[row];
        if (key !== undefined) window.location.href = withParams(promptUrl, { key });
      });
    }
  }

  // The page's prompts as links, with what ranked them; and where this page is among all.
  function list(page) {
    const ol = el("heat-keys");
    ol.start = page.offset + 1;
    ol.replaceChildren(...page.rows.map((key, i) => {
      const li = document.createElement("li");
      const a = document.createElement("a");
      a.href = withParams(promptUrl, { key });
      a.textContent = key;
      const change = page.row_change[i];
      const small = document.createElement("small");
      small.className = "muted";
      small.textContent = ` ${page.row_observations[i]} obs.${change === null ? "" : `, ${change >= 0 ? "+" : ""}${change.toFixed(2)}`}`;
      li.append(a, small);
      return li;
    }));
    const first = page.total ? page.offset + 1 : 0;
    const last = page.offset + page.rows.length;
    const what = page.q ? ` whose key contains “${page.q}”` : "";
    const span = page.since > 0 ? ` over steps ${page.since}–${page.ranked_through}` : " over the whole run";
    el("heat-note").textContent = page.total
      ? `Prompts ${first}–${last} of ${page.total.toLocaleString("en-US")}${what}, ${page.order_label}${span}. `
        + "Click a row to open the prompt."
      : `No prompt observed yet${what}: rows appear with the run's first steps.`;
    controls.prev.disabled = page.offset <= 0;
    controls.next.disabled = last >= page.total;
  }

  function load() {
    if (poller) poller.stop();
    generation += 1;
    const mine = generation;
    heat = {};
    const params = { order: state.order, since: state.since, q: state.q, offset: state.offset, limit: ROWS };
    poller = new Poller({ url: withParams(url, params), interval, onError, onData: (page) => {
      if (mine !== generation) return;  // an answer for controls since changed
      if (page.rows) {
        heat = { rows: page.rows, steps_per_column: page.steps_per_column };
        poller.url = withParams(url, { ...params, ranked_through: page.ranked_through });
        list(page);
      }
      const before = heat.step ? heat.step.length : -1;
      appendColumns(heat, page, "step", ["z", "observations"]);
      if (page.rows || heat.step.length !== before) drawHeat();
    } });
    poller.start();
  }

  controls.order.addEventListener("change", () => { state.order = controls.order.value; state.offset = 0; load(); });
  controls.window.addEventListener("change", () => {
    state.since = controls.window.value === "recent" ? Math.max(0, lastStep() - WINDOW_STEPS + 1) : 0;
    state.offset = 0;
    load();
  });
  let typing = null;
  controls.search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = controls.search.value.trim(); state.offset = 0; load(); }, 300);
  });
  controls.prev.addEventListener("click", () => { state.offset = Math.max(0, state.offset - ROWS); load(); });
  controls.next.addEventListener("click", () => { state.offset += ROWS; load(); });
  load();
  return { get poller() { return poller; }, get heat() { return heat; } };
}
