// A server's page: its state and service chips live (the status stream for this server),
// its metrics charts, and the live panes of the jobs started from it (job.js).
import { apply } from "./hosts.js";
import { follow } from "./live.js";
import { charts } from "./charts.js";
import "./job.js";

const head = document.getElementById("server-head");
if (head) {
  const id = Number(head.dataset.serverId);
  follow(`/api/v1/status/events?servers=${id}`, {
    snapshot: (d) => d.hosts.forEach(apply),
    host: (d) => apply(d.host),
  });
}
charts(document.getElementById("charts"));

// When a service operation started here ends, its host is probed at once by the server;
// the status stream then brings the new unit state to the chips above.
