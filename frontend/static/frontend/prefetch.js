// The run page's first requests (the charts of its first screen), sent while plotly.js (4.8 MB)
// is still being compiled: an async module runs as soon as it has arrived, before the deferred
// scripts. run.js takes the answers from here instead of asking again (same URLs: schedule.js
// pointsFor gives the same ?points=).
import { pointsFor } from "./schedule.js";

const cfg = JSON.parse(document.getElementById("run-page").textContent);

function early(base, params) {
  const url = new URL(base, window.location.origin);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  const path = url.pathname + url.search;
  return { url: path, answer: fetch(path, { headers: { Accept: "application/json" }, credentials: "same-origin" })
    .then((response) => (response.ok ? response.json() : null)).catch(() => null) };
}

window.edgeplanePrefetch = {
  series: early(cfg.urls.series, { points: String(pointsFor("chart-rollouts")), after: "-1" }),
  evaluations: early(cfg.urls.evaluations, { after: "-1" }),
};
