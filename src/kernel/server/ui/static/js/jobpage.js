// The job page: the panes (job.js) and the tabs between folded output and one pane per host.
// A job that ends while the page is open is shown again as the server renders ended jobs
// (folded output, the rerun button).
import "./job.js";

const tabs = [...document.querySelectorAll("#job-tabs [role=tab]")];
function select(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", String(on));
    document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
  }
}
for (const t of tabs) t.addEventListener("click", () => select(t));

// After a pause, so the last lines are seen where they streamed.
document.addEventListener("kernel:job-ended", () => setTimeout(() => location.reload(), 1500));
