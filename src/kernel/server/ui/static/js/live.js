// One EventSource with a visible state ("Live" / "reconnecting…") on [data-live].
// EventSource reconnects by itself (with Last-Event-ID); we only show whether it is up.

const words = () => document.getElementById("i18n")?.dataset ?? {};

export function follow(url, handlers) {
  const badge = document.querySelector("[data-live]");
  const show = (up) => {
    if (!badge) return;
    badge.classList.toggle("is-down", !up);
    badge.textContent = up ? words().online : words().offline;
  };
  const source = new EventSource(url);
  source.addEventListener("open", () => show(true));
  source.addEventListener("error", () => show(false));
  for (const [type, fn] of Object.entries(handlers)) {
    source.addEventListener(type, (evt) => {
      show(true);
      fn(JSON.parse(evt.data), evt);
    });
  }
  addEventListener("pagehide", () => source.close());
  return source;
}
