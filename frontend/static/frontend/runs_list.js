// The runs list, live: while any listed run is queued, starting or running, polls the list's
// JSON (runs_views.runs_live: the same filters, sort and page as this URL, the current team's
// runs only) and rewrites each row's status, progress (or warm-up), ETA, elapsed time, savings,
// Pass@1 and device-hours; the figures come as words from the server. Stops once none is active.
// Rows stay where they are until a reload: a live re-sort would move rows under the pointer.
import { Poller } from "./live.js";

const node = document.getElementById("runs-list-config");
const cfg = node ? JSON.parse(node.textContent) : null;
const note = document.getElementById("runs-live");

function set(row, selector, value) {
  const el = row.querySelector(selector);
  if (el && el.textContent !== value) el.textContent = value;
}

function bar(className, percent, title) {
  const outer = document.createElement("div");
  outer.className = className;
  outer.title = title;
  const inner = document.createElement("span");
  inner.style.width = `${percent}%`;
  outer.append(inner);
  return outer;
}

function small(className, text) {
  const el = document.createElement("small");
  el.className = className;
  el.textContent = text;
  return el;
}

function progress(cell, run) {
  const warm = run.warmup;
  const kind = warm ? "warmup" : "steps";
  const shown = cell.querySelector(".progress span");
  if (cell.dataset.kind === kind && shown) {  // the same bar: move it (its width transition animates)
    shown.style.width = `${warm ? warm.percent : run.progress_percent}%`;
    set(cell, "small", warm ? warm.short : `${run.steps_completed}/${run.steps_planned}`);
    cell.querySelector(".progress").title = warm ? warm.label : `${run.steps_completed} of ${run.steps_planned} steps`;
    return;
  }
  cell.dataset.kind = kind;
  cell.replaceChildren(...(warm
    ? [bar("progress warmup", warm.percent, warm.label), small("warming-up", warm.short)]
    : [bar("progress", run.progress_percent, `${run.steps_completed} of ${run.steps_planned} steps`),
       small("steps", `${run.steps_completed}/${run.steps_planned}`)]));
}

function update(run) {
  const row = document.querySelector(`tr[data-run="${run.id}"]`);
  if (!row) return;
  row.dataset.status = run.status;
  const badge = row.querySelector(".cell-status .badge");
  if (badge && badge.textContent !== run.status) {
    badge.textContent = run.status;
    badge.className = `badge status-${run.status}`;
  }
  const cancelling = row.querySelector(".cell-status .cancelling");
  if (cancelling) cancelling.hidden = !run.cancelling;
  const waiting = row.querySelector(".cell-status .waiting");
  if (waiting) { waiting.textContent = run.waiting; waiting.hidden = !run.waiting; }
  progress(row.querySelector(".cell-progress"), run);
  set(row, ".cell-eta small", run.eta);
  set(row, ".cell-elapsed", run.elapsed);
  set(row, ".cell-savings .savings", run.savings);
  set(row, ".cell-savings .savings-note", run.savings_note);
  row.querySelector(".cell-savings").title = run.savings_title;
  set(row, ".cell-pass1 .pass1", run.pass1);
  set(row, ".cell-pass1 .pass1-step", run.pass1_step === null ? "" : `@${run.pass1_step}`);
  set(row, ".cell-hours", run.device_hours);
}

if (cfg && cfg.active) {
  const poller = new Poller({
    url: cfg.url, interval: cfg.poll_ms, cursor: false,
    onData: (data) => {
      data.runs.forEach(update);
      if (note) note.textContent = data.active ? "updating live" : "";
    },
    onError: (error, next) => {
      if (note) note.textContent = `live updates paused (${error.message}); retrying in ${Math.round(next / 1000)} s`;
    },
  });
  poller.start();
  if (note) note.textContent = "updating live";
}
