// The run page's logs panel: the worker's lines for this run (controlplane/operations/run_logs.py
// keeps them), polled with a cursor while the run is active, filtered by level, following the tail
// unless the reader scrolls up.
import { Poller, withParams } from "./live.js";

const SHOWN_MAX = 5000;  // lines kept in the page; the download has them all

function row(line) {
  const li = document.createElement("li");
  li.className = `log-line level-${line.level.toLowerCase()}`;
  const time = document.createElement("time");
  time.dateTime = line.at;
  time.textContent = line.at.slice(11, 23);
  time.title = `${line.at}${line.attempt ? `, attempt ${line.attempt}` : ""}`;
  const level = document.createElement("span");
  level.className = "log-level";
  level.textContent = line.level;
  const logger = document.createElement("span");
  logger.className = "log-logger";
  logger.textContent = line.logger;
  const message = document.createElement("span");
  message.className = "log-message";
  message.textContent = line.message;
  li.append(time, " ", level, " ", logger, " ", message);
  return li;
}

export function startLogs(tools) {
  const box = document.getElementById("log-lines");
  if (!box || !tools) return;
  const level = document.getElementById("log-level");
  const follow = document.getElementById("log-follow");
  const note = document.getElementById("log-note");
  const download = document.getElementById("log-download");
  let poller = null;
  let shown = 0;

  const describe = (page) => {
    const parts = [];
    if (!page.kept) parts.push("No lines yet: the worker's lines for this run appear here while it trains.");
    else if (level.value) parts.push(`${box.childElementCount.toLocaleString()} shown at this level of ${page.kept.toLocaleString()} lines kept`);
    else parts.push(`${page.kept.toLocaleString()} lines kept`);
    if (page.dropped) parts.push(`${page.dropped.toLocaleString()} earlier lines were dropped (a run keeps its newest ${page.cap.toLocaleString()})`);
    if (shown >= SHOWN_MAX) parts.push(`the newest ${SHOWN_MAX.toLocaleString()} shown here; the download has every line kept`);
    note.textContent = parts.join("; ") + (page.finished ? "." : "; live.");
  };

  const begin = () => {
    if (poller) poller.stop();
    box.replaceChildren();
    shown = 0;
    const params = level.value ? { level: level.value } : {};
    download.href = withParams(tools.logs_download, params);
    poller = new Poller({ url: withParams(tools.logs, params), after: 0, interval: 2000, onData: (page) => {
      if (page.lines.length) {
        box.append(...page.lines.map(row));
        shown += page.lines.length;
        while (box.childElementCount > SHOWN_MAX) box.firstElementChild.remove();
        if (follow.checked) box.scrollTop = box.scrollHeight;
      }
      describe(page);
    }, onError: (error, delay) => { note.textContent = `Log updates paused (${error.message}); retrying in ${Math.round(delay / 1000)} s.`; } });
    poller.start();
  };

  // Scrolling up stops following the tail; back at the bottom, it follows again.
  box.addEventListener("scroll", () => { follow.checked = box.scrollTop + box.clientHeight >= box.scrollHeight - 4; });
  follow.addEventListener("change", () => { if (follow.checked) box.scrollTop = box.scrollHeight; });
  level.addEventListener("change", begin);
  begin();
}
