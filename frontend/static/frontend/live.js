// Polling with a cursor: ask for what is newer than `after`, hand it over, repeat.
// - every `interval` ms while the run is live; at once while the answer says has_more;
// - paused while the tab is hidden, resumed (with an immediate poll) when it shows again;
// - on an error, backs off: interval x 2, x 4, ... up to maxInterval, and resets on success;
// - stops once an answer says the run has finished (`finished`, which the server derives from
//   the run's status; that answer holds the last rows: the server reads the status before the rows).

export function withParams(url, params) {
  const u = new URL(url, window.location.origin);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u.pathname + u.search;
}

export class Poller {
  constructor({ url, after = -1, interval = 2000, maxInterval = 60000, onData, onError, onStop, cursor = true }) {
    Object.assign(this, { url, after, interval, maxInterval, onData, onError, onStop, cursor });
    this.failures = 0;
    this.timer = null;
    this.stopped = false;
    this.busy = false;
    this.onVisibility = () => {
      if (document.hidden) { clearTimeout(this.timer); this.timer = null; }
      else if (!this.stopped) this.schedule(0);
    };
  }

  start() {
    document.addEventListener("visibilitychange", this.onVisibility);
    this.schedule(0);
    return this;
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisibility);
    if (this.onStop) this.onStop();
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.stopped || document.hidden) return;  // visibilitychange resumes it
    this.timer = setTimeout(() => this.tick(), ms);
  }

  async tick() {
    if (this.busy || this.stopped) return;
    this.busy = true;
    let next = this.interval;
    try {
      const url = this.cursor ? withParams(this.url, { after: this.after }) : this.url;
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(`${response.status} ${response.statusText} from ${url}`);
      const data = await response.json();
      this.failures = 0;
      if (this.cursor && data.next_after !== undefined) this.after = data.next_after;
      this.onData(data);
      if (data.has_more) next = 0;
      else if (data.finished) { this.busy = false; this.stop(); return; }
    } catch (error) {
      this.failures += 1;
      next = Math.min(this.interval * 2 ** this.failures, this.maxInterval);
      if (this.onError) this.onError(error, next);
    }
    this.busy = false;
    this.schedule(next);
  }
}
