// Every signed-in page: the header's unread count follows new notifications without a reload.
// It asks the server's tiny JSON count every data-poll-ms (EDGEPLANE_NOTIFICATIONS_POLL_SECONDS)
// while the tab is visible, and at once when the tab comes back into view.
const link = document.getElementById("notif-link");
const badge = document.getElementById("notif-badge");

function show(unread) {
  badge.hidden = unread === 0;
  badge.textContent = unread > 99 ? "99+" : String(unread);
  link.title = unread === 0 ? "no unread notifications"
    : `${unread} unread notification${unread === 1 ? "" : "s"}`;
}

async function refresh() {
  if (document.visibilityState !== "visible") return;
  try {
    const response = await fetch(link.dataset.unreadUrl, { headers: { Accept: "application/json" } });
    if (response.ok) show((await response.json()).unread);
  } catch {
    // offline for a moment: the next poll tries again
  }
}

if (link && badge) {
  setInterval(refresh, Number(link.dataset.pollMs) || 30000);
  document.addEventListener("visibilitychange", refresh);
}
