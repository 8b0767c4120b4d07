// Compare: held-out accuracy of several runs overlaid, against rollouts and device-hours.
import { draw } from "./plots.js";

const runs = JSON.parse(document.getElementById("compare-data").textContent);
const palette = ["#2563eb", "#dc2626", "#16a34a", "#f59e0b", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];

function traces(x) {
  return runs.flatMap((run, i) => [
    { x: run[x], y: run.pass_at_1, name: `${run.name} Pass@1`, type: "scatter", mode: "lines+markers",
      line: { color: palette[i % palette.length], width: 2 }, text: run.step, hovertemplate: "step %{text}: %{y:.3f}" },
    { x: run[x], y: run.pass_at_k, name: `${run.name} Pass@k`, type: "scatter", mode: "lines",
      line: { color: palette[i % palette.length], width: 1.5, dash: "dot" }, text: run.step,
      hovertemplate: "step %{text}: %{y:.3f}" },
  ]);
}

const share = { tickformat: ".0%", range: [0, 1.02], gridcolor: "#eef0f3" };
draw("chart-compare-rollouts", traces("rollouts_generated_total"),
     { height: 320, hovermode: "closest", xaxis: { title: { text: "rollouts generated" } }, yaxis: share });
draw("chart-compare-hours", traces("device_hours_total"),
     { height: 320, hovermode: "closest", xaxis: { title: { text: "device-hours" } }, yaxis: share });
