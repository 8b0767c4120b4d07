// New run: show a method's parameters when it is ticked, and keep two things current as any field
// changes, both answered by the server from the whole form:
// - the cost forecast (the run's device-hours against what the team has left), the figure the launch
//   itself is checked against;
// - every problem of the form at once (the check the launch runs: conflicting methods, parameters out
//   of range, the budget, the dataset and baseline), beside each field and in the summary at the top,
//   with the advice for the form as it stands and the methods the chosen engine cannot run. The rules
//   live on the server only (frontend/new_run.py): this page shows what it answers.
const form = document.getElementById("new-run");

for (const box of form.querySelectorAll('input[name="method"]')) {
  box.addEventListener("change", () => box.closest(".method").classList.toggle("on", box.checked));
}

// Not form.dataset: the form has an input named "dataset", which shadows it.
const forecastUrl = form.getAttribute("data-forecast-url");
const checkUrl = form.getAttribute("data-check-url");
const team = form.getAttribute("data-team");
const box = document.getElementById("forecast");
let timer = null;
let asked = 0; // the latest check asked: an older answer arriving late is dropped

function formParams() {
  const params = new URLSearchParams(new FormData(form));
  params.delete("csrfmiddlewaretoken");
  params.set("team", team);
  return params;
}

async function refreshForecast() {
  try {
    const response = await fetch(`${forecastUrl}?${formParams()}`, { headers: { Accept: "application/json" } });
    if (!response.ok) return;  // the fields do not make a config yet: the check below says why
    const data = await response.json();
    box.classList.toggle("fits", data.fits);
    box.classList.toggle("exceeds", !data.fits);
    box.querySelector(".forecast-message").textContent = data.message;
    let meter = box.querySelector(".meter span");
    if (data.share !== null && !meter) {
      const bar = document.createElement("div");
      bar.className = "meter";
      meter = document.createElement("span");
      bar.append(meter);
      box.append(bar);
    }
    if (meter && data.share !== null) meter.style.width = `${Math.min(data.share * 100, 100).toFixed(1)}%`;
  } catch {
    /* the server answers again at submit */
  }
}

// Where a problem of an input shows: the element carrying its data-field (a field, a method's
// fieldset, the methods' or the budget's error holder).
function holderOf(field) {
  return form.querySelector(`[data-field="${CSS.escape(field)}"]`);
}

function showProblems(problems) {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  for (const marked of form.querySelectorAll(".has-error")) marked.classList.remove("has-error");
  const general = form.querySelector("ul.errors");
  if (general) general.remove();
  for (const problem of problems) {
    const holder = holderOf(problem.field);
    const line = document.createElement(holder && holder.classList.contains("errors-of") ? "p" : "span");
    line.className = "field-error";
    line.setAttribute("role", "alert");
    line.textContent = holder ? problem.message : `${problem.label}: ${problem.message}`;
    if (holder) {
      holder.append(line);
      if (holder.classList.contains("field")) holder.classList.add("has-error");
      const more = holder.closest("details");
      if (more) more.open = true;  // a problem under "More settings" is never hidden
    } else {
      form.querySelector("section.launch button").before(line);
    }
  }
  const summary = document.getElementById("problems");
  summary.hidden = problems.length === 0;
  summary.querySelector(".problems-count").textContent =
    `${problems.length} problem${problems.length === 1 ? "" : "s"} to fix before launching`;
  const list = summary.querySelector("ul");
  list.replaceChildren(...problems.map((problem) => {
    const item = document.createElement("li");
    item.dataset.for = problem.field;
    const link = document.createElement("a");
    link.href = `#f-${problem.field}`;
    const label = document.createElement("strong");
    label.textContent = problem.label;
    link.append(label);
    item.append(link, `: ${problem.message}`);
    return item;
  }));
}

function showAdvice(advice) {
  const section = document.getElementById("advice");
  section.hidden = advice.length === 0;
  section.querySelector("ul").replaceChildren(...advice.map((text) => {
    const item = document.createElement("li");
    item.textContent = text;
    return item;
  }));
}

function showMethods(methods) {
  for (const state of methods) {
    const fieldset = form.querySelector(`fieldset[data-method="${CSS.escape(state.name)}"]`);
    if (!fieldset) continue;
    const tick = fieldset.querySelector('input[name="method"]');
    // A method the engine cannot run is disabled, unless ticked (then its problem says why).
    tick.disabled = Boolean(state.unavailable) && !tick.checked;
    fieldset.classList.toggle("unavailable", Boolean(state.unavailable));
    for (const [selector, text] of [[".method-unavailable", state.unavailable], [".method-note", state.note]]) {
      const line = fieldset.querySelector(selector);
      line.textContent = text;
      line.hidden = !text;
    }
  }
}

async function refreshCheck() {
  const mine = ++asked;
  try {
    const response = await fetch(`${checkUrl}?${formParams()}`, { headers: { Accept: "application/json" } });
    if (!response.ok || mine !== asked) return;
    const data = await response.json();
    if (mine !== asked) return;
    showProblems(data.problems);
    showAdvice(data.advice);
    showMethods(data.methods);
    form.setAttribute("data-checked", String(mine));  // tests wait for this (not form.dataset: shadowed)
  } catch {
    /* the server checks again at submit */
  }
}

// Open "More settings" when a summary link points into it.
document.getElementById("problems").addEventListener("click", (event) => {
  const link = event.target.closest("a");
  const target = link && document.getElementById(link.getAttribute("href").slice(1));
  const more = target && target.closest("details");
  if (more) more.open = true;
});

const later = () => {
  clearTimeout(timer);
  timer = setTimeout(() => { refreshForecast(); refreshCheck(); }, 250);
};
form.addEventListener("input", later);
form.addEventListener("change", later);
