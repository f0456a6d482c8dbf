// The dashboard, live: every server's state, figures and service chips follow
// GET /api/v1/status/events (a snapshot, then one "host" event per change).
import { apply } from "./hosts.js";
import { follow } from "./live.js";

// A fleet larger than one page follows only the servers on the page shown (the stream's
// snapshot of 10 000 hosts would be megabytes); a new page or filter follows its own.
let source = null;
let following = null;
function subscribe() {
  const fleet = document.getElementById("fleet");
  const ids = fleet?.hasAttribute("data-paged")
    ? [...new Set([...fleet.querySelectorAll("[data-server-id]")].map((e) => e.dataset.serverId))]
    : null;
  const url = "/api/v1/status/events" + (ids ? "?servers=" + ids.join(",") : "");
  if (url === following) return;
  source?.close();
  following = url;
  source = follow(url, {
    snapshot: (d) => d.hosts.forEach(apply),
    host: (d) => apply(d.host),
  });
}
subscribe();
document.body.addEventListener("htmx:afterSwap", subscribe);

// Bulk selection: the count, select all shown / none.
const bulk = document.getElementById("bulk");
function count() {
  const n = bulk?.querySelectorAll('input[name="servers"]:checked').length ?? 0;
  const label = document.getElementById("selected-count");
  if (label) label.textContent = label.dataset.template.replace("{n}", n);
}
bulk?.addEventListener("change", count);
bulk?.addEventListener("click", (evt) => {
  const which = evt.target.closest?.("[data-select]")?.dataset.select;
  if (!which) return;
  for (const box of bulk.querySelectorAll('input[name="servers"]:not(:disabled)')) box.checked = which === "all";
  count();
});
document.body.addEventListener("htmx:afterSwap", count);
