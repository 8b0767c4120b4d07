// Compute budget: the team's use over the period as a time series (dates on x), against its
// limit and the 80% line at which it warns, the forecast to the period's end, and what uniform
// GRPO would have used for the same steps. Shaped by frontend.charts.budget_series.
import { draw } from "./plots.js";

const s = JSON.parse(document.getElementById("budget-data").textContent);
const traces = [
  { x: s.time, y: s.used_device_hours, name: "device-hours used", type: "scatter", mode: "lines",
    line: { color: "#2563eb", width: 2, shape: "hv" }, fill: "tozeroy", fillcolor: "rgba(37,99,235,0.08)" },
  { x: s.time, y: s.uniform_device_hours, name: "uniform GRPO would have used", type: "scatter", mode: "lines",
    line: { color: "#9ca3af", width: 2, dash: "dash", shape: "hv" } },
];
if (s.limit) traces.push({ x: s.limit.time, y: s.limit.device_hours, name: "limit", type: "scatter", mode: "lines",
                           line: { color: "#dc2626", width: 2 } });
if (s.warning_line) traces.push({ x: s.warning_line.time, y: s.warning_line.device_hours, name: "80% of the limit (warning)",
                                  type: "scatter", mode: "lines", line: { color: "#f59e0b", width: 1.5, dash: "dash" } });
if (s.forecast) traces.push({ x: s.forecast.time, y: s.forecast.device_hours, name: "forecast to period end",
                              type: "scatter", mode: "lines", line: { color: "#7c3aed", width: 2, dash: "dot" } });
const extra = {
  height: 340, hovermode: "x unified", empty: s.empty || undefined,
  xaxis: { type: "date", range: s.range, title: { text: "date (UTC)" }, hoverformat: "%Y-%m-%d %H:%M" },
  yaxis: { title: { text: "device-hours (cumulative)" }, rangemode: "tozero" },
};
// Nothing used yet, but the period and its limit are drawn: say so over them.
if (s.empty && traces.some((t) => t.x.length)) {
  extra.annotations = [{ text: s.empty, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5,
                         font: { color: "#6b7280", size: 13 } }];
}
draw("chart-budget", traces, extra);
