// Prompt: its pass rate and entropies over the run's steps.
import { draw, line } from "./plots.js";

const s = JSON.parse(document.getElementById("prompt-data").textContent);
draw("chart-prompt", [
  line(s.step, s.pass_rate, "pass rate", "#16a34a"),
  line(s.step, s.response_entropy, "response entropy", "#2563eb", { yaxis: "y2" }),
  line(s.step, s.prompt_entropy, "prompt entropy", "#7c3aed", { yaxis: "y2" }),
], { height: 300, xaxis: { title: { text: "step" }, integer: true }, yaxis: { tickformat: ".0%", range: [-0.02, 1.02], title: { text: "pass rate" } },
     yaxis2: { overlaying: "y", side: "right", showgrid: false, title: { text: "entropy" } } });
