// Compare: one per-step metric of several runs overlaid (picked from a select), and their
// held-out accuracy against rollouts, device-hours or FLOPs. Both choices live in the URL.
// The data come from one request for every run (frontend/compare_views.py compare_data).
import { draw } from "./plots.js";

const config = JSON.parse(document.getElementById("compare-config").textContent);
const palette = ["#2563eb", "#dc2626", "#16a34a", "#f59e0b", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const metricSelect = document.getElementById("compare-metric");
const axisSelect = document.getElementById("compare-axis");
const state = { metric: config.metric, axis: config.axis, data: null };

// The y axis of each unit: shares as percentages, FLOPs as powers of ten, the rest as numbers.
const UNITS = {
  share: { title: "share", tickformat: ".0%" },
  count: { title: "" },
  tokens: { title: "tokens" },
  seconds: { title: "seconds" },
  "device-hours": { title: "device-hours", exponentformat: "none" },
  FLOPs: { title: "FLOPs", exponentformat: "power" },
  value: { title: "" },  // the label says what it is
};
const X_FORMATS = { rollouts: {}, device_hours: { exponentformat: "none" }, flops: { exponentformat: "power" } };

function stepAxis(steps) {
  // whole steps only: no tick at step 0.5
  const last = Math.max(1, ...steps);
  return { title: { text: "step" }, tickmode: "linear", tick0: 0, dtick: Math.max(1, Math.ceil(last / 10)),
           rangemode: "tozero" };
}

function note(id, text) {
  document.getElementById(id).textContent = text;
}

function keepInUrl() {
  const url = new URL(window.location.href);
  url.searchParams.set("metric", state.metric);
  url.searchParams.set("x", state.axis);
  window.history.replaceState(null, "", url);
  for (const [name, value] of [["metric", state.metric], ["x", state.axis]]) {
    const input = document.querySelector(`#compare-pick input[name=${name}]`);
    if (input) input.value = value;
  }
}

function drawMetric() {
  const { metric, runs } = state.data;
  const unit = UNITS[metric.unit] || UNITS.value;
  const traces = runs.map((run, i) => ({
    x: run.step, y: run.value, name: run.label, type: "scatter", mode: run.step.length > 60 ? "lines" : "lines+markers",
    connectgaps: false, line: { color: palette[i % palette.length], width: 2 }, marker: { size: 5 },
    hovertemplate: `step %{x}: %{y${metric.unit === "share" ? ":.1%" : ""}}`,
  }));
  const { title, ...format } = unit;
  draw("chart-compare-metric", traces, {
    height: 320, hovermode: "closest", xaxis: stepAxis(runs.flatMap((r) => r.step)),
    yaxis: { title: { text: metric.label.includes(title) ? metric.label : `${metric.label} (${title})` }, ...format },
  });
  document.getElementById("compare-metric-caption").textContent = `${metric.label}, against the step`;
  const missing = runs.filter((r) => r.recorded === 0).map((r) => r.label);
  note("compare-metric-note", missing.length ? `Not recorded by ${missing.join(", ")}.` : "");
  document.getElementById("chart-compare-metric").dataset.metric = metric.name;
}

function passK(ks) {
  const distinct = [...new Set(ks)];
  return distinct.length === 1 ? `Pass@${distinct[0]}` : "Pass@k";
}

function drawAccuracy() {
  const { evaluations } = state.data;
  const axis = state.axis;
  const traces = evaluations.flatMap((run, i) => [
    { x: run[axis], y: run.pass_at_1, name: `${run.label} Pass@1`, type: "scatter", mode: "lines+markers",
      line: { color: palette[i % palette.length], width: 2 }, text: run.step, hovertemplate: "step %{text}: %{y:.3f}" },
    { x: run[axis], y: run.pass_at_k, name: `${run.label} ${passK(run.k)}`, type: "scatter", mode: "lines",
      line: { color: palette[i % palette.length], width: 1.5, dash: "dot" }, text: run.step,
      hovertemplate: "step %{text}: %{y:.3f}" },
  ]);
  draw("chart-compare-accuracy", traces, {
    height: 320, hovermode: "closest", xaxis: { title: { text: config.axes[axis] }, ...X_FORMATS[axis] },
    yaxis: { title: { text: "held-out accuracy" }, tickformat: ".0%", range: [0, 1.02] },
  });
  document.getElementById("compare-axis-caption").textContent =
    `Held-out accuracy (Pass@1 solid, Pass@k dotted) against ${config.axes[axis]}`;
  const unknown = evaluations.filter((r) => r.step.length && r[axis].every((x) => x === null)).map((r) => r.label);
  note("compare-axis-note", unknown.length ? `No ${axis === "flops" ? "FLOPs estimate" : "figure"} for ${unknown.join(", ")}: left off this axis.` : "");
  document.getElementById("chart-compare-accuracy").dataset.axis = axis;
  if (axis === "flops") document.getElementById("flops-basis").open = true;
}

async function load() {
  const params = new URLSearchParams();
  for (const id of config.runs) params.append("run", id);
  params.set("metric", state.metric);
  const response = await fetch(`${config.data_url}?${params}`, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) {
    note("compare-metric-note", `Cannot load the chart: ${(body.errors && body.errors.parameters || [response.statusText]).join("; ")}`);
    return;
  }
  state.data = body;
  drawMetric();
  drawAccuracy();
}

metricSelect.addEventListener("change", () => {
  state.metric = metricSelect.value;
  keepInUrl();
  load();
});
axisSelect.addEventListener("change", () => {
  state.axis = axisSelect.value;
  keepInUrl();
  if (state.data) drawAccuracy();
});
const all = document.getElementById("diff-all");
all.addEventListener("change", () => {
  for (const row of document.querySelectorAll("#config-diff tr.same")) row.hidden = !all.checked;
});

function start() {
  if (window.Plotly) load();
  else window.addEventListener("load", load, { once: true });  // plotly.min.js is deferred
}
start();
