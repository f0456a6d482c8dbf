// A host's brief (status/brief.py) applied to every element of the page that shows it
// ([data-server-id]): state, figures, unit chips. Only text and classes change.

const data = document.getElementById("i18n-dash")?.dataset ?? {};
const unitWords = JSON.parse(data.unitWords || "{}");
const stateWords = JSON.parse(data.stateWords || "{}");

function uptime(seconds) {
  if (seconds == null) return "—";
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return data.uptimeDh.replace("{d}", d).replace("{h}", h);
  if (h) return data.uptimeHm.replace("{h}", h).replace("{m}", m);
  return data.uptimeM.replace("{m}", m);
}
const pct = (v) => (v == null ? "—" : `${Math.round(v)}%`);
const text = {
  cpu: (f) => pct(f.cpu),
  mem: (f) => pct(f.mem == null ? null : f.mem * 100),
  disk: (f) => pct(f.disk == null ? null : f.disk * 100),
  load1: (f) => (f.load1 == null ? "—" : String(f.load1)),
  uptime: (f) => uptime(f.uptime),
};
const meterValue = { cpu: (f) => (f.cpu == null ? 0 : f.cpu / 100), mem: (f) => f.mem ?? 0, disk: (f) => f.disk ?? 0 };

function setClass(el, prefix, word) {
  for (const c of [...el.classList]) if (c.startsWith(prefix)) el.classList.remove(c);
  el.classList.add(prefix + word);
}

// Elements by server id, found once (a snapshot of 1000 hosts would otherwise search the
// whole page 1000 times); found again after htmx swaps part of the page.
let byId = null;
document.addEventListener("htmx:afterSwap", () => { byId = null; });
function elementsOf(id) {
  if (!byId) {
    byId = new Map();
    for (const el of document.querySelectorAll("[data-server-id]")) {
      const key = Number(el.dataset.serverId);
      if (!byId.has(key)) byId.set(key, []);
      byId.get(key).push(el);
    }
  }
  return byId.get(Number(id)) ?? [];
}

export function apply(host) {
  for (const el of elementsOf(host.server_id)) {
    setClass(el, "is-", host.state);
    const badge = el.querySelector("[data-state]");
    if (badge) {
      setClass(badge, "s-", host.state);
      badge.textContent = stateWords[host.state] ?? host.state;
    }
    const f = host.figures || {};
    for (const node of el.querySelectorAll("[data-fig-text]")) {
      const fn = text[node.dataset.figText];
      if (fn) node.textContent = fn(f);
    }
    for (const m of el.querySelectorAll("meter[data-fig]")) {
      const fn = meterValue[m.dataset.fig];
      if (fn) m.value = fn(f);
    }
    const units = host.units || {};
    for (const chip of el.querySelectorAll("[data-unit-chip]")) {
      const unit = chip.dataset.unit;
      if (!(unit in units)) continue;
      const word = units[unit];
      setClass(chip, "s-", word);
      chip.title = unitWords[word] ?? word;
      const w = chip.querySelector("[data-word]");
      if (w) w.textContent = unitWords[word] ?? word;
    }
  }
}

