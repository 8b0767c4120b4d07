// A "CSV · JSON" control on each chart of the run page: the chart's data as the server shaped it
// for drawing (frontend/exports.py), over the whole run. The learning-edge map's files are of the
// step it shows (the slider, or every prompt's current state).
import { withParams } from "./live.js";

function edgeStep() {
  const now = document.getElementById("edge-now");
  const slider = document.getElementById("edge-step");
  return !now || now.checked || !slider || slider.disabled ? "now" : slider.value;
}

export function addDownloads(downloads) {
  for (const [chart, urls] of Object.entries(downloads || {})) {
    const el = document.getElementById(chart);
    const caption = el && el.closest("figure") && el.closest("figure").querySelector("figcaption");
    if (!caption || caption.querySelector(".downloads")) continue;
    const box = document.createElement("span");
    box.className = "downloads";
    box.append("data: ");
    Object.entries(urls).forEach(([fmt, url], i) => {
      const link = document.createElement("a");
      link.href = url;
      link.textContent = fmt.toUpperCase();
      link.title = `Download this chart's data as ${fmt.toUpperCase()}`;
      link.dataset.chart = chart;
      link.dataset.format = fmt;
      link.setAttribute("download", "");
      if (chart === "chart-edge") link.addEventListener("click", () => { link.href = withParams(url, { step: edgeStep() }); });
      if (i) box.append(" · ");
      box.append(link);
    });
    caption.append(box);
  }
}
