// New run: show a method's parameters when it is ticked, and keep the cost forecast (the run's
// device-hours against what the team has left) current as any field changes: the server prices the
// whole form (model size, lengths, evaluation, warm-up), the figure the launch itself is checked against.
const form = document.getElementById("new-run");

for (const box of form.querySelectorAll('input[name="method"]')) {
  box.addEventListener("change", () => box.closest(".method").classList.toggle("on", box.checked));
}

// Not form.dataset: the form has an input named "dataset", which shadows it.
const forecastUrl = form.getAttribute("data-forecast-url");
const team = form.getAttribute("data-team");
const box = document.getElementById("forecast");
let timer = null;

async function refresh() {
  const params = new URLSearchParams(new FormData(form));
  params.delete("csrfmiddlewaretoken");
  params.set("team", team);
  try {
    const response = await fetch(`${forecastUrl}?${params}`, { headers: { Accept: "application/json" } });
    if (!response.ok) return;  // the fields do not make a config yet: their errors show on submit
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

const later = () => { clearTimeout(timer); timer = setTimeout(refresh, 250); };
form.addEventListener("input", later);
form.addEventListener("change", later);
