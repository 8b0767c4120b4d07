// Compute budget: the team's use over the period against its limit, the forecast to the
// period's end, and what uniform GRPO would have used for the same steps.
import { draw } from "./plots.js";

const s = JSON.parse(document.getElementById("budget-data").textContent);
const traces = [
  { x: s.time, y: s.used_device_hours, name: "device-hours used", type: "scatter", mode: "lines+markers",
    line: { color: "#2563eb", width: 2, shape: "hv" }, fill: "tozeroy", fillcolor: "rgba(37,99,235,0.08)" },
  { x: s.time, y: s.uniform_device_hours, name: "uniform GRPO would have used", type: "scatter", mode: "lines",
    line: { color: "#9ca3af", width: 2, dash: "dash", shape: "hv" } },
];
if (s.limit) traces.push({ x: s.limit.time, y: s.limit.device_hours, name: "limit", type: "scatter", mode: "lines",
                           line: { color: "#dc2626", width: 2 } });
if (s.forecast) traces.push({ x: s.forecast.time, y: s.forecast.device_hours, name: "forecast to period end",
                              type: "scatter", mode: "lines", line: { color: "#f59e0b", width: 2, dash: "dot" } });
draw("chart-budget", traces, { height: 340, hovermode: "closest", xaxis: { type: "date" },
                               yaxis: { title: { text: "device-hours (cumulative)" }, rangemode: "tozero" } });
