// The run page's savings tiles, live: what frontend/savings.py says for the run's totals now
// (the figure, the sentence in words, why it is negative, the formula with the run's numbers),
// fetched from the savings endpoint when new steps arrive and written into the tiles.

function put(id, value, { hideEmpty = false, prefix = "" } = {}) {
  const el = document.getElementById(id);
  if (!el) return;
  el.textContent = value ? `${prefix}${value}` : "";
  if (hideEmpty) el.hidden = !value;
}

export function showTile(tile) {
  put(tile.element, tile.shown);
  put(`${tile.element}-sentence`, tile.sentence || tile.empty);
  put(`${tile.element}-why`, tile.why, { hideEmpty: true, prefix: "Why: " });
  put(`${tile.element}-worked`, tile.worked, { hideEmpty: true });
}

let inFlight = null;

// Fetch and show; at most one request at a time (a later call while one runs waits for it).
export async function refreshSavings(url) {
  if (inFlight) return inFlight;
  inFlight = (async () => {
    try {
      const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) return;
      const data = await response.json();
      for (const tile of data.tiles) showTile(tile);
      if (data.effective) showTile(data.effective);
      showTile(data.device);
    } catch {
      // the next step's update tries again
    } finally {
      inFlight = null;
    }
  })();
  return inFlight;
}
