// When the run page draws what: the charts in view first, the rest later.
// - A chart is drawn once it comes near the viewport (IntersectionObserver), or, after the first
//   view has been drawn, once the browser is idle (one chart a task, in page order, input handled
//   between two), so a page left open still ends with every chart drawn.
// - Until then `draw` only keeps the chart's newest traces; `whenShown` starts a chart's data
//   (its first request, its polling) at the same moment.
// - `pointsFor` is how many rows a chart can show (its width in pixels): the ?points= of its first
//   request (frontend/downsample.py keeps each bucket's extremes).
import { draw as plotDraw } from "./smoothing.js";  // plots.js's draw, with the smoothing slider applied

const shown = new Set();
const pendingDraws = new Map();  // chart id -> [traces, layout extra]: drawn when shown
const waiting = new Map();  // chart id -> callbacks run when shown
const drawnHooks = [];
let observer = null;

const idle = (fn) => (window.requestIdleCallback ? window.requestIdleCallback(fn, { timeout: 400 }) : setTimeout(fn, 30));

// Rows a chart shows apart: a line's min/max pair every 4 pixels (2 rows), a bar every 3.
export function pointsFor(id, pixelsPerRow = 2) {
  const el = document.getElementById(id);
  return Math.max(100, Math.round(((el && el.clientWidth) || 600) / pixelsPerRow));
}

export function isShown(id) {
  return shown.has(id);
}

// Called with the chart's id after each time it is drawn (zoom wiring, say).
export function onDrawn(fn) {
  drawnHooks.push(fn);
}

// Axes with fixed margins instead of Plotly's automargin: automargin measures the tick labels
// after a first draw and, when the margins change, draws the chart a second time (a run page's
// charts drew in about a third of the time without it). The margins fit the dashboard's ticks
// (counts as 1.2M, shares as 100%, steps); a chart that sets its own margin or automargin keeps it.
const FIXED_MARGIN = { l: 64, r: 16, t: 30, b: 44 };
function fixedMargins(extra) {
  const out = { ...extra };
  for (const axis of ["xaxis", "yaxis", "yaxis2"]) {
    if (axis === "yaxis2" && !extra.yaxis2) continue;
    out[axis] = { automargin: false, ...(extra[axis] || {}) };
  }
  out.margin = { ...FIXED_MARGIN, ...(extra.yaxis2 ? { r: 56 } : {}), ...(extra.margin || {}) };
  return out;
}

function drawNow(id, traces, extra) {
  const start = performance.now();
  plotDraw(id, traces, fixedMargins(extra));
  const el = document.getElementById(id);
  if (el) el.dataset.drawMs = String(Math.round(performance.now() - start));  // what the bench reads
  for (const fn of drawnHooks) fn(id);
}

export function draw(id, traces, extra = {}) {
  if (shown.has(id) || !document.getElementById(id)) drawNow(id, traces, extra);
  else pendingDraws.set(id, [traces, extra]);
}

// Start what a chart waits for (its data) without drawing it yet.
function start(id) {
  const callbacks = waiting.get(id) || [];
  waiting.delete(id);
  for (const fn of callbacks) fn();
}

export function reveal(id) {
  if (shown.has(id)) return;
  shown.add(id);
  const el = document.getElementById(id);
  if (observer && el) observer.unobserve(el);
  start(id);
  if (pendingDraws.has(id)) {
    const [traces, extra] = pendingDraws.get(id);
    pendingDraws.delete(id);
    drawNow(id, traces, extra);
  }
}

// Run `fn` once, when the first of these charts is shown (at once if one is).
export function whenShown(ids, fn) {
  let done = false;
  const once = () => { if (!done) { done = true; fn(); } };
  const list = [].concat(ids).filter((id) => document.getElementById(id));
  if (!list.length || list.some((id) => shown.has(id))) { once(); return; }
  for (const id of list) {
    if (!waiting.has(id)) waiting.set(id, []);
    waiting.get(id).push(once);
  }
}

// Watch every chart of the page; the ones near the viewport are shown at once.
export function watch(selector = ".chart[id]") {
  const charts = [...document.querySelectorAll(selector)];
  if (!("IntersectionObserver" in window)) {
    for (const el of charts) reveal(el.id);
    return;
  }
  observer = new IntersectionObserver((entries) => {
    for (const entry of entries) if (entry.isIntersecting) reveal(entry.target.id);
  }, { rootMargin: "200px 0px" });
  for (const el of charts) observer.observe(el);
}

// After the first view: the data of every chart not shown yet are asked for at once (the
// server answers them side by side), then the charts are drawn one a task, top to bottom.
let idleStarted = false;
export function revealRestWhenIdle(selector = ".chart[id]") {
  if (idleStarted) return;
  idleStarted = true;
  const queue = [...document.querySelectorAll(selector)].map((el) => el.id);
  idle(() => { for (const id of queue) if (!shown.has(id)) start(id); });
  // one chart a task, back to back: input (a scroll, a click) is handled between two charts
  const next = () => {
    while (queue.length) {
      const id = queue.shift();
      if (!shown.has(id)) { reveal(id); break; }
    }
    if (queue.length) setTimeout(next, 0);
  };
  idle(next);
}

// Replace the rows of `store` whose x lies in [lo, hi] by the rows of `page` (a zoomed window
// fetched at full resolution): every array column, nested or not; a column one side lacks is
// padded with null. Scalars (status, cursor) are left alone.
export function spliceRows(store, page, x, lo, hi) {
  const xs = store[x] || [];
  let i0 = 0;
  while (i0 < xs.length && xs[i0] < lo) i0 += 1;
  let i1 = i0;
  while (i1 < xs.length && xs[i1] <= hi) i1 += 1;
  const added = (page[x] || []).length;
  const merge = (target, source) => {
    const keys = new Set([...Object.keys(target), ...Object.keys(source)]);
    for (const key of keys) {
      const t = target[key];
      const s = source[key];
      if (Array.isArray(t) || Array.isArray(s)) {
        const old = Array.isArray(t) ? t : new Array(xs.length).fill(null);
        const add = Array.isArray(s) ? s : new Array(added).fill(null);
        target[key] = old.slice(0, i0).concat(add, old.slice(i1));
      } else if ((t && typeof t === "object") || (s && typeof s === "object")) {
        if (!t || typeof t !== "object") target[key] = {};
        merge(target[key], s && typeof s === "object" ? s : {});
      }
    }
  };
  merge(store, page);
  return store;
}
