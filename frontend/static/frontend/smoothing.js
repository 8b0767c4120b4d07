// Smoothing of the run page's noisy series (reward, group shares, entropies, accuracy, ...).
// The smoother is the debiased exponential moving average of TensorBoard's scalar dashboard (and
// the "exponential moving average" of W&B's line plots): s_t = w * s_{t-1} + (1 - w) * y_t from
// s_0 = 0, divided by (1 - w^n) after n values, so the first points are not pulled toward zero.
// Gaps (null) stay gaps and do not count; a constant series is drawn as it is.
// The slider (0 .. 0.99, 0 = off) is remembered in localStorage; with it above 0 each line is drawn
// bold, smoothed, over its raw values drawn faint.
import { draw as plotsDraw } from "./plots.js";

const KEY = "edgeplane.smoothing";
const MAX = 0.99;
// Cumulative series: smoothing would only make them lag.
const NOT_SMOOTHED = new Set(["chart-rollouts", "chart-savings"]);

export function smooth(values, weight) {
  const w = Math.min(Math.max(Number(weight) || 0, 0), MAX);
  const finite = values.filter((v) => Number.isFinite(v));
  if (w === 0 || finite.every((v) => v === finite[0])) return values.slice();
  let last = 0;
  let n = 0;
  return values.map((v) => {
    if (!Number.isFinite(v)) return v;  // a gap stays a gap
    last = last * w + (1 - w) * v;
    n += 1;
    return last / (1 - w ** n);
  });
}

// The traces as drawn at this weight: each line trace becomes its raw values (faint, no legend
// entry, no hover) and its smoothed values (bold, the legend's entry); bars and markers stay as they are.
export function smoothTraces(traces, weight) {
  if (!(weight > 0)) return traces;
  const out = [];
  traces.forEach((t, i) => {
    const isLine = (t.type || "scatter") === "scatter" && String(t.mode || "lines").includes("lines");
    if (!isLine || !Array.isArray(t.y)) { out.push(t); return; }
    const group = t.legendgroup || `smoothed-${i}`;
    const color = (t.line && t.line.color) || (t.marker && t.marker.color);
    out.push({ ...t, mode: "lines", showlegend: false, legendgroup: group, hoverinfo: "skip", hovertemplate: undefined,
               opacity: 0.28, fill: "none", line: { ...(t.line || {}), color, width: 1 } });
    out.push({ ...t, y: smooth(t.y, weight), mode: "lines", legendgroup: group,
               line: { ...(t.line || {}), color, width: 3 } });
  });
  return out;
}

let weight = 0;
const drawn = new Map();  // chart id -> the last traces and layout given, to redraw when the slider moves

// plots.js's draw, smoothing the chart's lines at the slider's weight.
export function draw(id, traces, extra = {}) {
  drawn.set(id, [traces, extra]);
  const smoothed = NOT_SMOOTHED.has(id) ? traces : smoothTraces(traces, weight);
  plotsDraw(id, smoothed, extra);
  const el = document.getElementById(id);
  if (el) el.dataset.smoothing = NOT_SMOOTHED.has(id) ? "0" : String(weight);
}

function stored() {
  try {
    const value = Number(window.localStorage.getItem(KEY));
    return Number.isFinite(value) ? Math.min(Math.max(value, 0), MAX) : 0;
  } catch {
    return 0;  // storage refused (privacy settings): start off
  }
}

function bindControl() {
  const input = document.getElementById("smoothing");
  if (!input) return;
  const output = document.getElementById("smoothing-value");
  const show = () => { if (output) output.textContent = weight > 0 ? weight.toFixed(2) : "off"; };
  weight = stored();
  input.value = String(weight);
  show();
  input.addEventListener("input", () => {
    weight = Math.min(Math.max(Number(input.value) || 0, 0), MAX);
    show();
    try { window.localStorage.setItem(KEY, String(weight)); } catch { /* not remembered, still applied */ }
    for (const [id, [traces, extra]] of drawn) draw(id, traces, extra);
  });
}

bindControl();
