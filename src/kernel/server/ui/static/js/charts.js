// Metrics charts (uPlot) for one server over 1 h / 24 h / 7 d, read from
// GET /api/v1/servers/<id>/metrics. Colours come from the page's CSS variables, so the
// charts follow the light or dark scheme.

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// Series labels are the page's (translated) data-label-* attributes.
const SPECS = {
  cpu: { series: [["cpu_percent", "cpu"]], max: 100 },
  mem: { series: [["mem", "mem"]], max: 100 },
  disk: { series: [["disk", "disk"]], max: 100 },
  load: { series: [["load1", "load1"], ["load5", "load5"], ["load15", "load15"]] },
};
const label = (root, key) => root.dataset[`label${key[0].toUpperCase()}${key.slice(1)}`] || key;

function percentSeries(times, used, total) {
  const u = new Map(used), t = new Map(total);
  return times.map((x) => (u.has(x) && t.get(x) ? (100 * u.get(x)) / t.get(x) : null));
}

function column(times, pairs) {
  const m = new Map(pairs);
  return times.map((x) => (m.has(x) ? m.get(x) : null));
}

export function charts(root) {
  if (!root || typeof uPlot === "undefined") return;
  const id = root.dataset.serverId;
  const made = [];
  const tabs = [...document.querySelectorAll("[data-range]")];

  async function load(range) {
    const until = Date.now() / 1000;
    const r = await fetch(`/api/v1/servers/${id}/metrics?since=${until - range}&until=${until}`, {
      headers: { Accept: "application/json" },
    });
    if (!r.ok) return;
    const m = await r.json();
    const t = m.times;
    const values = {
      cpu_percent: column(t, m.series.cpu_percent || []),
      mem: percentSeries(t, m.series.mem_used || [], m.series.mem_total || []),
      disk: percentSeries(t, m.series.disk_used || [], m.series.disk_total || []),
      load1: column(t, m.series.load1 || []),
      load5: column(t, m.series.load5 || []),
      load15: column(t, m.series.load15 || []),
    };
    while (made.length) made.pop().destroy();
    const colors = [css("--accent"), css("--warn"), css("--bad")];
    for (const box of root.querySelectorAll("[data-chart]")) {
      const spec = SPECS[box.dataset.chart];
      box.querySelector(".chart-empty")?.remove();
      if (!t.length) {
        const p = document.createElement("p");
        p.className = "muted chart-empty";
        p.textContent = root.dataset.empty;
        box.append(p);
        continue;
      }
      const opts = {
        width: Math.max(260, box.clientWidth - 4),
        height: 180,
        scales: { y: spec.max ? { range: [0, spec.max] } : { range: (u, lo, hi) => [0, Math.max(1, hi * 1.2)] } },
        axes: [
          { stroke: css("--muted"), grid: { stroke: css("--line") } },
          { stroke: css("--muted"), grid: { stroke: css("--line") } },
        ],
        series: [
          { label: label(root, "time") },
          ...spec.series.map(([, name], i) => ({ label: label(root, name), stroke: colors[i], width: 1.5, spanGaps: false })),
        ],
      };
      const data = [t, ...spec.series.map(([key]) => values[key])];
      made.push(new uPlot(opts, data, box));
    }
    root.dataset.loaded = String(t.length);
  }

  for (const tab of tabs) {
    tab.addEventListener("click", () => {
      for (const other of tabs) other.setAttribute("aria-selected", String(other === tab));
      load(Number(tab.dataset.range));
    });
  }
  load(Number(tabs[0]?.dataset.range || 3600));
  let width = root.clientWidth;
  addEventListener("resize", () => {
    if (Math.abs(root.clientWidth - width) > 40) {
      width = root.clientWidth;
      load(Number(document.querySelector('[data-range][aria-selected="true"]')?.dataset.range || 3600));
    }
  });
}
