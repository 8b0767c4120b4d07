// The run page: polls the run's chart endpoints with a cursor and draws what they hold.
// The series come shaped by frontend/charts.py; this module only stores and draws them.
// Every name it draws by comes from the page's config (views.run_detail): the method panels
// as the methods declare them, the buckets, the phases and the legend of each column.
import { startHeatmap } from "./heatmap.js";
import { Poller, withParams } from "./live.js";
import { COLORS, append, appendColumns, emptyNotes, fixed, line, pct, plain } from "./plots.js";
import { linkBars, startTools } from "./run_tools.js";
import { refreshSavings } from "./savings.js";
// Charts are drawn when shown (near the viewport, or once idle after the first view): schedule.js,
// through smoothing.js's draw (plots.js's, with the smoothing slider applied).
import { draw, isShown, onDrawn, pointsFor, revealRestWhenIdle, spliceRows, watch, whenShown } from "./schedule.js";

const cfg = JSON.parse(document.getElementById("run-page").textContent);
const label = (method) => cfg.labels[method] || method;
const legend = (column) => cfg.legends[column] || column;
const stepPanels = cfg.panels.filter((p) => p.view === "steps");
const viewPanels = (view) => cfg.panels.filter((p) => p.view === view);

const steps = {};
const evals = {};
const acts = {};
const allocations = {};  // by panel id
let lastStep = cfg.last_step;
let pending = true;  // new steps arrived: redraw the snapshots (edge map, energy, newest decisions)

// -- header and tiles ------------------------------------------------------------------------

function text(id, value) {
  const el = document.getElementById(id);
  if (el) el.textContent = value;
}

function header(state) {
  const badge = document.getElementById("run-status");
  if (badge && state.status) {
    badge.textContent = state.status;
    badge.className = `badge status-${state.status}`;
  }
  if (state.steps_planned) {
    const share = Math.min(state.steps_completed / state.steps_planned, 1);
    document.getElementById("run-progress").style.width = `${(share * 100).toFixed(1)}%`;
    text("run-steps", `${state.steps_completed} / ${state.steps_planned} steps`);
  }
  const reason = state.reason || (state.cancel_requested && !state.finished
    ? "Cancel requested: stops at the next step." : "");
  text("run-reason", reason);
  if ("warmup" in state) warmupHead(state, reason);
  if (state.finished) {
    const cancel = document.getElementById("cancel-form");
    if (cancel) cancel.remove();
  }
}

// The warm-up's bar while the run's current attempt warms up (steps done, device time booked),
// giving way to the RL step bar once RL starts; and, while queued, why the run waits.
function warmupHead(state, reason) {
  const w = state.warmup;
  const warming = Boolean(w && w.active && !state.finished);
  document.getElementById("warmup-block").hidden = !warming;
  document.getElementById("rl-block").hidden = warming;
  const done = document.getElementById("warmup-done");
  done.hidden = !w || warming;
  if (w) {
    document.getElementById("warmup-progress").style.width = `${w.percent}%`;
    text("warmup-steps", w.label);
    text("warmup-booked", w.booked);
    done.textContent = `after ${w.label}; ${w.booked}`;
  }
  const waiting = document.getElementById("run-waiting");
  const message = state.waiting_for ? state.waiting_for.message : "";
  waiting.textContent = message;
  waiting.hidden = !message || message === reason;  // the broker's words are the reason already
}

function liveNote(message) {
  let el = document.getElementById("live-note");
  if (!el) {
    el = document.createElement("p");
    el.id = "live-note";
    el.className = "live-note";
    document.querySelector(".run-head").after(el);
  }
  el.textContent = message;
  el.hidden = !message;
}

const onError = (error, delay) => liveNote(`Live updates paused (${error.message}); retrying in ${Math.round(delay / 1000)} s.`);

function tiles() {
  const n = steps.step.length;
  if (!n) return;
  const last = (name) => (steps[name] || [])[n - 1];
  // One tile per yardstick that applies (frontend.charts.yardstick_tiles), in percent as the server writes them.
  for (const t of cfg.tiles) text(t.element, pct(last(t.series)));
  text("tile-generated", String(last("rollouts_generated_total")));
  text("tile-uniform", String(last("rollouts_uniform_total")));
  text("tile-effective", pct(last("effective_share_of_generated_total")));
  text("tile-hours", fixed(last("device_hours_total"), 4));
  refreshSavings(cfg.urls.savings);  // the sentences, why lines and worked formulas (frontend/savings.py)
}

// -- "Rollout savings" -----------------------------------------------------------------------------

const STEP_AXIS = { title: { text: "step" }, gridcolor: "#eef0f3", integer: true };  // whole steps (plots.js)
const SHARE_AXIS = { tickformat: ".0%", range: [0, 1.02], gridcolor: "#eef0f3" };

const SAVING_COLORS = { uniform: COLORS.savings, dynamic_sampling: "#0891b2", backward_mixed: "#7c3aed" };
const savingTiles = cfg.tiles.filter((t) => t.saving);

function drawSteps() {
  const x = steps.step;
  draw("chart-rollouts", [
    line(x, steps.rollouts_generated_total, legend("rollouts_generated_total"), COLORS.generated, { fill: "tozeroy", fillcolor: "rgba(37,99,235,0.08)" }),
    line(x, steps.rollouts_uniform_total, legend("rollouts_uniform_total"), COLORS.uniform, { line: { color: COLORS.uniform, dash: "dash", width: 2 } }),
    line(x, steps.rollout_savings_total, legend("rollout_savings_total"), COLORS.savings, { yaxis: "y2" }),
  ], { xaxis: STEP_AXIS, yaxis: { title: { text: "rollouts (cumulative)" }, gridcolor: "#eef0f3" },
       yaxis2: { overlaying: "y", side: "right", tickformat: ".0%", showgrid: false,  // negative when it spent more
                 title: { text: "saved vs uniform GRPO" } } });
  // Each saving against its own yardstick; a gap until that yardstick has an estimate.
  draw("chart-savings", savingTiles.map((t) => line(x, steps[t.series] || [], t.legend, SAVING_COLORS[t.yardstick])),
       { xaxis: STEP_AXIS, yaxis: { title: { text: "saved" }, tickformat: ".0%", gridcolor: "#eef0f3" } });
  draw("chart-shares", [
    line(x, steps.effective_share_of_generated, legend("effective_share_of_generated"), COLORS.effective),
    line(x, steps.all_correct_share, legend("all_correct_share"), COLORS.all_correct),
    line(x, steps.all_wrong_share, legend("all_wrong_share"), COLORS.all_wrong),
  ], { xaxis: STEP_AXIS, yaxis: SHARE_AXIS });
  draw("chart-reward", [line(x, steps.reward_mean, legend("reward_mean"), COLORS.reward)],
       { xaxis: STEP_AXIS, yaxis: { title: { text: "mean reward" }, gridcolor: "#eef0f3" } });
  const seconds = steps.seconds || {};
  draw("chart-seconds", cfg.phases.map((phase) => ({
    x, y: seconds[phase.name] || [], name: phase.label, type: "bar", marker: { color: phase.color } })),
  { barmode: "stack", bargap: 0.1, xaxis: STEP_AXIS, yaxis: { title: { text: "seconds" }, gridcolor: "#eef0f3" } });
  drawStepPanels();
  tiles();
}

function drawEvaluations() {
  const traces = (xName) => [
    line(evals[xName], evals.pass_at_1, "Pass@1", COLORS.pass1, { text: evals.step, hovertemplate: "step %{text}: %{y:.3f}" }),
    line(evals[xName], evals.pass_at_k, `Pass@${evals.k.length ? evals.k[evals.k.length - 1] : "k"}`, COLORS.passk,
         { text: evals.step, hovertemplate: "step %{text}: %{y:.3f}" }),
  ];
  draw("chart-acc-rollouts", traces("rollouts_generated_total"),
       { xaxis: { title: { text: "rollouts generated" } }, yaxis: SHARE_AXIS, hovermode: "closest" });
  draw("chart-acc-hours", traces("device_hours_total"),
       { xaxis: { title: { text: "device-hours" } }, yaxis: SHARE_AXIS, hovermode: "closest" });
  const n = evals.step.length;
  if (n) {
    text("tile-pass1", fixed(evals.pass_at_1[n - 1]));
    text("tile-passk", `Pass@${evals.k[n - 1]} ${fixed(evals.pass_at_k[n - 1])} at step ${evals.step[n - 1]}`);
  }
}

// -- method panels: drawn from what each method declares (workers/selection/panels.py) ----------------

const PANEL_COLORS = ["#2563eb", "#f59e0b", "#16a34a", "#7c3aed", "#dc2626", "#0891b2", "#db2777", "#65a30d"];

// The axis of a unit: a share in percent, a count in whole numbers, a correlation in [-1, 1].
function unitAxis(unit, values) {
  if (unit === "share") return { tickformat: ".0%", range: [0, 1.02] };
  if (unit === "correlation") return { range: [-1, 1] };
  if (unit === "count") {
    const top = Math.max(0, ...values.flat().filter((v) => v !== null && v !== undefined));
    return { tickformat: ",d", rangemode: "tozero", ...(top <= 8 ? { dtick: 1 } : {}) };
  }
  return {};
}

// A series' column: step metrics (shares come divided already) or decisions counted per step.
function seriesData(s) {
  if (s.source === "decision") {
    const x = acts.step || [];
    return { x, y: (acts.counts || {})[s.column] || x.map(() => 0) };
  }
  return { x: steps.step || [], y: (steps.metrics || {})[s.column] || [] };
}

function drawStepPanel(panel) {
  const left = [];
  const right = [];
  const traces = panel.series.map((s, i) => {
    const { x, y } = seriesData(s);
    (s.axis === "right" ? right : left).push(y);
    const color = PANEL_COLORS[i % PANEL_COLORS.length];
    const axis = s.axis === "right" ? { yaxis: "y2" } : {};
    return s.style === "bar"
      ? { x, y, name: s.label, type: "bar", marker: { color }, ...axis }
      : line(x, y, s.label, color, axis);
  });
  const extra = { barmode: "group", bargap: 0.15, xaxis: STEP_AXIS, yaxis: unitAxis(panel.unit, left) };
  if (right.length) {
    extra.yaxis2 = { overlaying: "y", side: "right", showgrid: false, title: { text: panel.right_unit },
                     ...unitAxis(panel.right_unit, right) };
  }
  draw(panel.id, traces, extra);
}

function drawStepPanels() {
  for (const panel of stepPanels) drawStepPanel(panel);
}

// The panels drawn from their own endpoint, by view name.
async function drawEnergy(panel) {
  const data = await getJSON(cfg.urls[panel.view]);
  if (!data) return;
  const mids = data.edges.slice(0, -1).map((e, i) => (e + data.edges[i + 1]) / 2);
  draw(panel.id, [
    { x: mids, y: data.selected, name: "selected (trained)", type: "bar", marker: { color: "#2563eb" } },
    { x: mids, y: data.not_selected, name: "not selected", type: "bar", marker: { color: "#cbd5e1" } },
  ], { barmode: "stack", bargap: 0.05, hovermode: "closest", xaxis: { title: { text: `energy at step ${data.at_step}` } },
       yaxis: { title: { text: "groups" } } });
}

function drawAllocation(panel) {
  const a = allocations[panel.id];
  draw(panel.id, [{
    x: a.step, y: a.successes, z: a.mean_extra, customdata: a.prompts, type: "heatmap",
    colorscale: [[0, "#eff6ff"], [1, "#1d4ed8"]], colorbar: { title: { text: "extra" }, thickness: 12 },
    hoverongaps: false,
    hovertemplate: "step %{x}, %{y} probe hits: %{z:.1f} extra rollouts (%{customdata} prompts)<extra></extra>",
  }], { xaxis: STEP_AXIS, yaxis: { title: { text: "probe successes" }, dtick: 1 }, hovermode: "closest" });
}

// A snapshot chart (the edge map, LZE's energy) fetches its data once shown, then on new steps.
const ready = new Set();
function onceShown(id, fn) {
  whenShown(id, () => { ready.add(id); fn(); });
}

function drawSnapshots() {
  for (const panel of viewPanels("lze_energy")) if (ready.has(panel.id)) drawEnergy(panel);
}

// -- learning edge -------------------------------------------------------------------------------------

const edgeSlider = document.getElementById("edge-step");
const edgeNow = document.getElementById("edge-now");
let edgeFollow = true;  // the slider follows the newest step until the user moves it
let edgeKeys = [];  // the prompt key of each drawn point, by trace and point, for a click

// A click on a point opens its prompt. The chart may be drawn after its data came (schedule.js):
// wired when drawn, once.
function wireEdge() {
  const chart = document.getElementById("chart-edge");
  if (!chart || !chart.on || chart.dataset.wired) return;
  chart.dataset.wired = "1";
  chart.on("plotly_click", (event) => {
    const point = event.points && event.points[0];
    const key = point && (edgeKeys[point.curveNumber] || [])[point.pointNumber];
    if (key) window.location.href = withParams(cfg.urls.prompt, { key });
  });
}
onDrawn((id) => { if (id === "chart-edge") wireEdge(); });

async function drawEdge() {
  const step = edgeNow.checked ? "now" : edgeSlider.value;
  if (!edgeNow.checked && lastStep < 0) return;
  const data = await getJSON(withParams(cfg.urls.edge, { step }));
  if (!data) return;
  const shown = cfg.buckets.filter((b) => data.buckets[b.name] && data.buckets[b.name].x.length);
  edgeKeys = shown.map((b) => data.buckets[b.name].key);  // as written: draw() escapes the copies it draws
  // "scatter", not "scattergl": WebGL traces compile code at run time, which the page's
  // Content-Security-Policy (no 'unsafe-eval') forbids; SVG draws the few thousand points shown.
  const traces = shown.map((b) => ({
    x: data.buckets[b.name].x, y: data.buckets[b.name].y, text: data.buckets[b.name].key,
    name: `${b.label} (${data.counts[b.name]})`, type: "scatter", mode: "markers",
    marker: { color: b.color, size: 7, opacity: 0.75, line: { width: 0 } },
    hovertemplate: `%{text}<br>pass rate %{x:.2f}, entropy %{y:.3f}<extra>${plain(b.label)}</extra>`,
  }));
  draw("chart-edge", traces, { height: 340, hovermode: "closest",
       xaxis: { title: { text: "pass rate" }, range: [-0.03, 1.03], gridcolor: "#eef0f3" },
       yaxis: { title: { text: "response entropy" }, gridcolor: "#eef0f3" } });
  wireEdge();
  text("edge-step-label", edgeNow.checked ? "now" : `step ${step}`);
  const note = [`${data.shown} of ${data.total} prompts drawn`];
  if (data.no_entropy) note.push(`${data.no_entropy} without an entropy`);
  text("edge-note", note.join("; ") + ". Click a point to open the prompt.");
}

function bindEdge() {
  edgeSlider.addEventListener("input", () => { text("edge-step-label", `step ${edgeSlider.value}`); });
  edgeSlider.addEventListener("change", () => { edgeFollow = Number(edgeSlider.value) === lastStep; drawEdge(); });
  edgeNow.addEventListener("change", () => { edgeSlider.disabled = edgeNow.checked; drawEdge(); });
}

// -- audit trail ---------------------------------------------------------------------------------------

function drawActions() {
  const palette = ["#2563eb", "#dc2626", "#16a34a", "#f59e0b", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
                   "#9ca3af", "#ea580c", "#4f46e5", "#0d9488"];
  const names = Object.keys(acts.counts || {});
  draw("chart-actions", names.map((name, i) => {
    const [method, action] = name.split(".");
    return { x: acts.step, y: acts.counts[name], name: `${label(method)} ${action}`, type: "bar",
             marker: { color: palette[i % palette.length] } };
  }), { barmode: "stack", bargap: 0.1, hovermode: "closest", xaxis: STEP_AXIS, yaxis: { title: { text: "decisions" } } });
  linkBars("chart-actions", names, cfg.tools.audit);  // a click on a bar: the audit trail of that step and action
}

async function refreshRecent() {
  const data = await getJSON(cfg.urls.recent);
  if (!data) return;
  const body = document.getElementById("recent");
  const rows = data.results.map((d) => {
    const tr = document.createElement("tr");
    const cell = (value, cls) => { const td = document.createElement("td"); if (cls) td.className = cls; td.append(value); return td; };
    const link = document.createElement("a");
    link.href = withParams(cfg.urls.prompt, { key: d.prompt_key });
    link.textContent = d.prompt_key;
    const badge = document.createElement("span");
    badge.className = `badge action-${d.action}`;
    badge.textContent = d.action;
    tr.append(cell(String(d.step), "num"), cell(link), cell(d.method), cell(badge), cell(d.message));
    return tr;
  });
  if (rows.length) body.replaceChildren(...rows);
}

// -- wiring ----------------------------------------------------------------------------------------------

// Draw a chart once its data are in: while pages of history are still coming (has_more),
// only note that something changed, and draw once after the last page.
const dirty = new Set();
function settle(name, changed, page, drawFn) {
  if (changed) dirty.add(name);
  if (!page.has_more && dirty.has(name)) {
    dirty.delete(name);
    drawFn();
  }
}

async function getJSON(url) {
  try {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

// Zoomed into a stretch of steps: fetch it at the resolution the chart shows (full when the
// stretch is short) and put it in place of the overview's rows there.
const STEP_CHARTS = new Set(["chart-rollouts", "chart-savings", "chart-shares", "chart-reward", "chart-seconds",
                             ...stepPanels.map((p) => p.id)]);
async function zoomed(id, event) {
  const a = event["xaxis.range[0]"] ?? (event["xaxis.range"] || [])[0];
  const b = event["xaxis.range[1]"] ?? (event["xaxis.range"] || [])[1];
  if (a === undefined || b === undefined) return;
  const lo = Math.max(0, Math.floor(a));
  const hi = Math.ceil(b);
  const actions = id === "chart-actions";
  const store = actions ? acts : steps;
  if (!store.step || !store.step.length || hi <= lo) return;
  const upto = Math.min(hi, store.step[store.step.length - 1]);
  if (upto <= lo) return;
  const page = await getJSON(withParams(actions ? cfg.urls.actions : cfg.urls.series,
                                        { after: lo - 1, until: upto, points: pointsFor(id) }));
  if (!page) return;
  spliceRows(store, page, "step", lo, upto);
  if (actions) { drawActions(); drawStepPanels(); } else drawSteps();
}
// The decisions chart may be drawn after its data came (schedule.js): link its bars then.
onDrawn((id) => { if (id === "chart-actions") linkBars(id, Object.keys(acts.counts || {}), cfg.tools.audit); });
onDrawn((id) => {
  const el = document.getElementById(id);
  if (!(STEP_CHARTS.has(id) || id === "chart-actions") || !el.on || el.dataset.zoomWired) return;
  el.dataset.zoomWired = "1";
  el.on("plotly_relayout", (event) => { zoomed(id, event); });
});

function start() {
  emptyNotes(cfg.empty);  // what each chart will show, and when, while it has no data
  const slow = cfg.poll_ms * 2;
  const secondary = [];
  watch();
  // Each chart's data start with its chart: one request at the chart's resolution (?points=),
  // then the cursor alone (new steps only) while the run is live.
  const actions = new Poller({ url: withParams(cfg.urls.actions, { points: pointsFor("chart-actions", 4) }),
                               interval: slow, onError, onData: (page) => {
    actions.url = cfg.urls.actions;
    const before = acts.step ? acts.step.length : -1;
    append(acts, page, "step", 0);
    settle("actions", acts.step.length !== before, page, () => { drawActions(); drawStepPanels(); });
  } });
  secondary.push(actions);
  const decisionPanels = stepPanels.filter((p) => p.series.some((s) => s.source === "decision")).map((p) => p.id);
  whenShown(["chart-actions", ...decisionPanels], () => actions.start());
  let heatmap = null;
  whenShown("chart-heatmap", () => {
    heatmap = startHeatmap({ url: cfg.urls.heatmap, promptUrl: cfg.urls.prompt, draw, interval: slow, onError,
                             stepAxis: STEP_AXIS, lastStep: () => lastStep });
  });
  onceShown("chart-edge", drawEdge);
  for (const panel of viewPanels("lze_energy")) onceShown(panel.id, () => drawEnergy(panel));
  for (const panel of viewPanels("hora_allocation")) {
    const a = (allocations[panel.id] = {});
    const poller = new Poller({ url: withParams(cfg.urls[panel.view], { points: pointsFor(panel.id) }), interval: slow,
                                onError, onData: (page) => {
      poller.url = cfg.urls[panel.view];
      if (!a.successes) a.successes = page.successes;
      const before = a.step ? a.step.length : -1;
      appendColumns(a, page, "step", ["mean_extra", "prompts"]);
      settle(panel.id, a.step.length !== before, page, () => drawAllocation(panel));
    } });
    secondary.push(poller);
    whenShown(panel.id, () => poller.start());
  }
  const evaluations = new Poller({ url: cfg.urls.evaluations, interval: cfg.poll_ms, onError, onData: (page) => {
    const before = evals.step ? evals.step.length : -1;
    append(evals, page);
    settle("evaluations", evals.step.length !== before, page, drawEvaluations);
  } });
  const series = new Poller({ url: withParams(cfg.urls.series, { points: pointsFor("chart-rollouts") }),
                              interval: cfg.poll_ms, onError, onData: (page) => {
    series.url = cfg.urls.series;
    liveNote("");
    header(page);
    const before = steps.step ? steps.step.length : -1;
    append(steps, page);
    settle("series", steps.step.length > before, page, drawSteps);
    if (steps.step.length > Math.max(before, 0)) {
      pending = true;
      lastStep = Math.max(lastStep, steps.step[steps.step.length - 1]);
      edgeSlider.max = String(Math.max(lastStep, 0));
      edgeSlider.disabled = edgeNow.checked || lastStep < 0;
      if (edgeFollow) edgeSlider.value = String(lastStep);
    }
    if (!page.has_more) revealRestWhenIdle();  // the first view is drawn: the rest, when idle
    if (pending && !page.has_more) {  // redraw the snapshots once every page is in
      pending = false;
      if (ready.has("chart-edge") && (edgeFollow || edgeNow.checked)) drawEdge();
      drawSnapshots();
      if (before >= 0) refreshRecent();  // the page came with the newest decisions: only newer ones
      // the started charts ask for the new steps now (a chart not shown yet starts with them)
      for (const p of [...secondary, heatmap && heatmap.poller]) if (p && !p.stopped && p.timer !== null) p.schedule(0);
    }
  } });
  // the first answers may be on their way already (prefetch.js, sent before plotly.js was ready)
  for (const [name, poller] of [["series", series], ["evaluations", evaluations]]) {
    const early = (window.edgeplanePrefetch || {})[name];
    if (!early || early.url !== withParams(poller.url, { after: -1 })) { poller.start(); continue; }
    early.answer.then((page) => {
      if (page) { poller.after = page.next_after; poller.onData(page); }
      if (page && page.finished && !page.has_more) { poller.stop(); return; }  // an ended run: nothing more to ask
      poller.start();
      if (page && !page.has_more) poller.schedule(poller.interval);  // it has just asked: the next poll in due time
    });
  }
  bindEdge();
  startTools(cfg.tools);
  window.edgeplane = { series, evaluations, secondary, steps, get heatmap() { return heatmap; }, isShown };
}

start();
