// The run page's daily tools, started by run.js with one call: a download control on each chart
// (downloads.js), the worker's log (logs.js), and a click on a bar of the decisions chart opening the
// audit trail of that step and action. Smoothing wraps run.js's draw (smoothing.js).
import { addDownloads } from "./downloads.js";
import { withParams } from "./live.js";
import { startLogs } from "./logs.js";

export function startTools(tools) {
  if (!tools) return;
  addDownloads(tools.downloads);
  startLogs(tools);
}

// `names` are the drawn traces' "method.action", in trace order (updated at every draw).
const barNames = {};
export function linkBars(id, names, auditUrl) {
  barNames[id] = names;
  const chart = document.getElementById(id);
  if (!chart || !chart.on || chart.dataset.linked) return;
  chart.dataset.linked = "1";
  chart.on("plotly_click", (event) => {
    const point = event.points && event.points[0];
    const name = point && barNames[id][point.curveNumber];
    if (!name || point.x === undefined) return;
    const [method, action] = name.split(".");
    window.location.href = withParams(auditUrl, { method, action, step_min: point.x, step_max: point.x });
  });
}
