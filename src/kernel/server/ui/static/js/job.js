// A job's panes, live: one EventSource per job (GET /api/v1/jobs/<id>/events). Each pane keeps
// a bounded number of lines in the page (the whole output is a download), and panes are
// redrawn at most a few times a second (off screen: once a second), so a job printing a
// million lines never freezes the tab. Output is set as text, never parsed as HTML.

const REDRAW_MS = 120;

class Pane {
  constructor(el, max) {
    this.el = el;
    this.pre = el.querySelector("[data-out]");
    this.note = el.querySelector("[data-cut-note]");
    this.max = max;
    this.lines = []; // [isErr, text]
    this.partial = ["", ""];
    this.dropped = 0;
    this.dirty = false;
    this.visible = true;
  }

  reset(stdout, stderr, partial) {
    this.lines = [];
    this.partial = ["", ""];
    this.dropped = partial ? 1 : 0;
    if (stdout) this.add("stdout", stdout);
    if (stderr) this.add("stderr", stderr);
    this.dirty = true;
  }

  add(stream, text) {
    const i = stream === "stderr" ? 1 : 0;
    const parts = (this.partial[i] + text).split("\n");
    this.partial[i] = parts.pop();
    for (const line of parts) this.lines.push([i, line]);
    if (this.lines.length > this.max * 2) {
      const cut = this.lines.length - this.max;
      this.lines.splice(0, cut);
      this.dropped += cut;
    }
    this.dirty = true;
  }

  render() {
    this.dirty = false;
    const shown = this.lines.length > this.max ? this.lines.slice(-this.max) : this.lines.slice();
    for (const i of [0, 1]) if (this.partial[i]) shown.push([i, this.partial[i]]);
    const atBottom = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 8;
    const frag = document.createDocumentFragment();
    let group = [];
    let err = 0;
    const flush = () => {
      if (!group.length) return;
      const text = group.join("\n") + "\n";
      if (err) {
        const span = document.createElement("span");
        span.className = "err";
        span.textContent = text;
        frag.append(span);
      } else frag.append(document.createTextNode(text));
      group = [];
    };
    for (const [isErr, line] of shown) {
      if (isErr !== err) { flush(); err = isErr; }
      group.push(line);
    }
    flush();
    this.pre.replaceChildren(frag);
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
    if (this.note) this.note.hidden = !(this.dropped > 0 || this.lines.length > this.max);
  }
}

function badge(holder, word, words) {
  if (!holder) return;
  const span = document.createElement("span");
  span.className = `state s-${word}`;
  span.textContent = words[word] ?? word;
  holder.replaceChildren(span);
}

function bind(root) {
  root.dataset.bound = "yes";
  const id = Number(root.dataset.jobId);
  const max = Number(root.dataset.maxLines) || 400;
  const words = JSON.parse(root.dataset.runWords || "{}");
  const panes = new Map();
  for (const el of root.querySelectorAll("[data-run]")) panes.set(el.dataset.run, new Pane(el, max));

  const seen = new IntersectionObserver((entries) => {
    for (const e of entries) {
      const pane = panes.get(e.target.dataset.run);
      if (pane) pane.visible = e.isIntersecting;
    }
  });
  for (const el of root.querySelectorAll("[data-run]")) seen.observe(el);
  // Panes on screen are redrawn every REDRAW_MS, the others about once a second.
  let tick = 0;
  const timer = setInterval(() => {
    tick += 1;
    const all = tick % 8 === 0;
    for (const pane of panes.values()) if (pane.dirty && (pane.visible || all)) pane.render();
  }, REDRAW_MS);

  const runChanged = (run) => {
    const pane = panes.get(run.id);
    if (!pane) return;
    badge(pane.el.querySelector("[data-run-badge]"), run.state, words);
    const exit = pane.el.querySelector("[data-exit]");
    if (exit) {
      exit.textContent = run.exit_code != null ? root.dataset.exitFmt.replace("{code}", run.exit_code)
        : run.signal ? root.dataset.signalFmt.replace("{n}", run.signal) : "";
    }
    const dur = pane.el.querySelector("[data-duration]");
    if (dur && run.duration != null) dur.textContent = run.duration < 1 ? `${Math.round(run.duration * 1000)} ms` : `${run.duration.toFixed(1)} s`;
    const error = pane.el.querySelector("[data-error]");
    if (error) { error.textContent = run.error || ""; error.hidden = !run.error; }
    if (!["queued", "running"].includes(run.state)) pane.render(); // its last line, at once
  };

  const ended = (state) => {
    badge(root.querySelector("[data-job-badge]"), state, words);
    root.querySelector("[data-cancel]")?.remove();
    root.dataset.jobState = state;
    for (const pane of panes.values()) pane.render();
    clearInterval(timer);
    root.dispatchEvent(new CustomEvent("kernel:job-ended", { bubbles: true, detail: { id, state } }));
  };

  if (root.dataset.jobState === "finished" || root.dataset.jobState === "cancelled") {
    clearInterval(timer);
    return;
  }
  const source = new EventSource(`/api/v1/jobs/${id}/events`);
  const on = (type, fn) => source.addEventListener(type, (evt) => fn(JSON.parse(evt.data)));
  on("snapshot", (d) => {
    for (const run of d.job.runs) {
      panes.get(run.id)?.reset(run.stdout, run.stderr, run.output_partial);
      runChanged(run);
    }
    badge(root.querySelector("[data-job-badge]"), d.job.state, words);
  });
  on("output", (d) => panes.get(d.run)?.add(d.stream, d.data));
  on("run", (d) => runChanged(d.run));
  on("job", (d) => badge(root.querySelector("[data-job-badge]"), d.job.state, words));
  on("end", (d) => { source.close(); ended(d.state); });
  addEventListener("pagehide", () => source.close());
}

function bindAll(scope = document) {
  for (const el of scope.querySelectorAll(".job-live:not([data-bound])")) bind(el);
}
bindAll();
document.addEventListener("htmx:load", (evt) => bindAll(evt.detail.elt.parentElement || document));
