// Drawing helpers over Plotly (served from the plotly Python package's bundled copy).
// Every chart is redrawn with Plotly.react and a fixed uirevision, so zoom, pan and legend
// choices survive each update; the data arrive in pages and are appended with `append`.

export const COLORS = {
  generated: "#2563eb", uniform: "#9ca3af", savings: "#059669", effective: "#2563eb",
  all_correct: "#16a34a", all_wrong: "#dc2626", pass1: "#7c3aed", passk: "#db2777", reward: "#0891b2",
};  // buckets and phases bring their colours in the page's config (frontend.charts.page_names)

// No Plotly logo, no "Edit in Chart Studio" and no cloud upload ("Share"): nothing leaves the page.
export const CONFIG = {
  displaylogo: false, showSendToCloud: false, showEditInChartStudio: false, showLink: false, responsive: true,
  modeBarButtonsToRemove: ["lasso2d", "select2d", "sendDataToCloud"],
};

// exponentformat "none": no SI prefix on small or large numbers ("0.0005", never "500µ"; "12,000", never "12k").
const AXIS = { gridcolor: "#eef0f3", zeroline: false, automargin: true, showline: true, linecolor: "#d1d5db",
               exponentformat: "none", separatethousands: true };

// Chart defaults; the axes given in `extra` are laid over the default axis, not in place of it.
export function layout(extra = {}) {
  const out = {
    uirevision: "keep",
    margin: { l: 56, r: 16, t: 30, b: 44 },
    height: 260,
    font: { family: "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size: 12, color: "#1f2937" },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "#ffffff",
    legend: { orientation: "h", x: 0, y: 1.0, yanchor: "bottom", bgcolor: "rgba(0,0,0,0)" },
    hovermode: "x unified",
    ...extra,
  };
  for (const axis of ["xaxis", "yaxis", "yaxis2"]) {
    if (axis !== "yaxis2" || extra.yaxis2) out[axis] = { ...AXIS, ...(extra[axis] || {}) };
  }
  if (extra.yaxis2) Object.assign(out.yaxis2, { showgrid: false, tickmode: "auto" });  // not synced to y's grid
  return out;
}

// Plotly reads pseudo-HTML in every name, label, tick, annotation and hover text: <a href> makes
// a link, <b> bold, <br> a break, &lt; an entity. Text that users wrote (run names, prompt keys,
// dataset names) must show as written, so plain() escapes &, < and >, and draw() passes every
// string of the traces and the layout through it: names, texts, customdata, category labels on
// x and y, axis titles, annotations. Templates are the exception (TEMPLATE_KEYS): their markup is
// ours; a caller that puts user text into a template wraps that text in plain() itself.
export function plain(value) {
  return String(value).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

const TEMPLATE_KEYS = new Set(["hovertemplate", "texttemplate"]);

function plainDeep(value) {
  if (typeof value === "string") return plain(value);
  if (Array.isArray(value)) return value.map(plainDeep);
  if (value && typeof value === "object") {
    const out = {};
    for (const [key, v] of Object.entries(value)) out[key] = TEMPLATE_KEYS.has(key) ? v : plainDeep(v);
    return out;
  }
  return value;
}

const EMPTY = "No data yet: it appears with the run's first steps";

// The values a trace puts on an axis ("x", "y" or "y2").
function axisValues(traces, axis) {
  const letter = axis[0];
  const ref = axis === "x" ? "x" : axis;
  return traces.filter((t) => (t[`${letter}axis`] || letter) === ref).flatMap((t) => t[letter] || []);
}

// Axis types are set, never guessed: an axis without data, or with numbers, is linear (Plotly would
// otherwise guess a date axis from nothing, and show the year 2000); text is categories. An axis
// marked `integer` (steps) ticks whole numbers only: a tick a step apart while the span is short,
// from step 0 while there is none.
export function axisShape(axis, values) {
  const { integer, ...out } = axis;
  const present = values.filter((v) => v !== null && v !== undefined);
  if (!out.type) out.type = present.some((v) => typeof v === "string") ? "category" : "linear";
  if (integer && out.type === "linear") {
    out.tickformat = out.tickformat || "d";
    const span = present.length ? Math.max(...present) - Math.min(...present) : 0;
    if (span <= 10) Object.assign(out, { tickmode: "linear", tick0: 0, dtick: 1 });
    if (!present.length && !out.range) out.range = [0, 10];  // no steps yet: not Plotly's -1 to 6
  }
  return out;
}

// `empty`: what the chart will show and when, said while it has no data (else the element's
// data-empty, else a general line).
export function draw(id, traces, extra = {}) {
  const el = document.getElementById(id);
  if (!el || !window.Plotly) return;
  const { empty: emptyText, ...rest } = extra;
  const empty = traces.every((t) => !(t.x && t.x.length) && !(t.z && t.z.length));
  const message = emptyText || el.dataset.empty || EMPTY;
  const annotations = empty ? [{ text: message, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
                                 font: { color: "#6b7280", size: 13 } }] : [];
  const shaped = layout(plainDeep({ annotations, ...rest }));
  for (const [name, axis] of [["xaxis", "x"], ["yaxis", "y"], ["yaxis2", "y2"]]) {
    if (shaped[name]) shaped[name] = axisShape(shaped[name], axisValues(traces, axis));
  }
  window.Plotly.react(el, plainDeep(traces), shaped, CONFIG);
  el.dataset.points = String(traces.reduce((n, t) => n + (t.x ? t.x.length : 0), 0));
}

// What each chart will show and when, by element id (frontend.charts.chart_notes), for draw()'s empty state.
export function emptyNotes(notes) {
  for (const [id, text] of Object.entries(notes || {})) {
    const el = document.getElementById(id);
    if (el) el.dataset.empty = text;
  }
}

// Append a page of columns to a store of columns. Arrays are columns, one entry per x value
// (`x` names the column that counts them); objects hold more columns. A column new in this
// page is padded with `fill` for the rows the store already had; a column the page lacks
// is padded for the page's rows. Scalars (status, cursor) are not columns and are skipped.
export function append(store, page, x = "step", fill = null) {
  const before = (store[x] || []).length;
  const added = (page[x] || []).length;
  const merge = (target, source) => {
    for (const [key, value] of Object.entries(source)) {
      if (Array.isArray(value)) target[key] = (target[key] || new Array(before).fill(fill)).concat(value);
      else if (value && typeof value === "object") merge((target[key] = target[key] || {}), value);
    }
    for (const [key, value] of Object.entries(target)) {
      if (Array.isArray(value) && !(key in source)) target[key] = value.concat(new Array(added).fill(fill));
    }
  };
  merge(store, page);
  return store;
}

// Append heat-map columns: z is rows x columns; each row gets the page's columns.
export function appendColumns(store, page, x = "step", rows = "z") {
  store[x] = (store[x] || []).concat(page[x] || []);
  for (const name of [].concat(rows)) {
    const z = page[name] || [];
    store[name] = store[name] || [];
    z.forEach((row, i) => { store[name][i] = (store[name][i] || []).concat(row); });
  }
  return store;
}

export function line(x, y, name, color, extra = {}) {
  return { x, y, name, type: "scatter", mode: x.length > 60 ? "lines" : "lines+markers",
           line: { color, width: 2 }, marker: { size: 5 }, connectgaps: false, ...extra };
}

export function pct(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;
}

export function fixed(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}
