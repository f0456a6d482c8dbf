// The dashboard, live: every server's state, figures and service chips follow
// GET /api/v1/status/events (a snapshot, then one "host" event per change).
import { apply } from "./hosts.js";
import { follow } from "./live.js";

follow("/api/v1/status/events", {
  snapshot: (d) => d.hosts.forEach(apply),
  host: (d) => apply(d.host),
});

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
