// What every console page does: confirmations in a <dialog> (never window.confirm), errors
// of htmx requests as toasts, copy buttons, and the login page's retry countdown. Text from
// the server is always set with textContent, never parsed as HTML.

const messages = () => document.getElementById("i18n")?.dataset ?? {};

export function toast(text, kind = "info", timeout = 6000) {
  const box = document.getElementById("toasts");
  if (!box) return;
  const el = document.createElement("div");
  el.className = `toast ${kind}`;
  el.setAttribute("role", kind === "bad" ? "alert" : "status");
  el.textContent = text;
  box.append(el);
  setTimeout(() => el.remove(), timeout);
}

// A confirmation for any element with data-confirm (htmx requests and plain forms);
// data-confirm-name makes the user type that name first (removing a server).
function confirmDialog(text, typedName) {
  const dialog = document.getElementById("confirm");
  if (!dialog) return Promise.resolve(false);
  dialog.querySelector(".confirm-text").textContent = text;
  const typed = dialog.querySelector(".confirm-typed");
  const input = dialog.querySelector("#confirm-input");
  const ok = dialog.querySelector("#confirm-ok");
  typed.hidden = !typedName;
  input.value = "";
  ok.disabled = Boolean(typedName);
  if (typedName) {
    const label = dialog.querySelector(".confirm-typed-label");
    label.textContent = (messages().typeName || "{name}").replace("{name}", typedName);
    input.oninput = () => { ok.disabled = input.value !== typedName; };
  }
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok" ? input.value || true : false), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
    (typedName ? input : ok).focus();
  });
}

document.addEventListener("htmx:confirm", (evt) => {
  const el = evt.detail.elt;
  const text = el.dataset?.confirm;
  if (!text) return;
  evt.preventDefault();
  confirmDialog(text, el.dataset.confirmName).then((yes) => { if (yes) evt.detail.issueRequest(true); });
});

document.addEventListener("submit", (evt) => {
  const form = evt.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm || form.hasAttribute("hx-post")) return;
  if (form.dataset.confirmed === "yes") return;
  evt.preventDefault();
  confirmDialog(form.dataset.confirm, form.dataset.confirmName).then((yes) => {
    if (!yes) return;
    const typed = form.querySelector('input[name="confirm_name"]');
    if (typed && typeof yes === "string") typed.value = yes;
    form.dataset.confirmed = "yes";
    form.requestSubmit(evt.submitter);
  });
});

function errorText(xhr) {
  const type = xhr.getResponseHeader("Content-Type") || "";
  if (type.includes("json")) {
    try { return JSON.parse(xhr.responseText).message; } catch { /* fall through */ }
  }
  if (type.includes("html")) {
    const doc = new DOMParser().parseFromString(xhr.responseText, "text/html");
    const frag = doc.querySelector(".error-fragment, .error-message");
    return (frag || doc.body).textContent.trim().replace(/\s+/g, " ");
  }
  return xhr.responseText || xhr.statusText;
}

document.addEventListener("htmx:responseError", (evt) => {
  toast(errorText(evt.detail.xhr) || messages().failed, "bad", 10000);
});
document.addEventListener("htmx:sendError", () => toast(messages().failed, "bad"));

// The server says what happened after an action (HX-Trigger: {"kernel:toast": "..."}).
document.addEventListener("kernel:toast", (evt) => toast(evt.detail.value, "good"));

document.addEventListener("click", async (evt) => {
  const btn = evt.target.closest?.("[data-copy]");
  if (!btn) return;
  const source = document.getElementById(btn.dataset.copy);
  const text = source ? (source.value ?? source.textContent) : "";
  try {
    await navigator.clipboard.writeText(text);
    toast(messages().copied, "good", 2500);
  } catch {
    if (source) {
      const range = document.createRange();
      range.selectNodeContents(source);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
    }
    toast(messages().copyFailed);
  }
});

// Login: "try again in N s" counts down, and the button comes back at zero.
const wait = document.querySelector("[data-retry-after]");
if (wait) {
  let left = Number(wait.dataset.retryAfter);
  const button = document.getElementById("login-submit");
  const tick = () => {
    left -= 1;
    if (left <= 0) {
      wait.hidden = true;
      if (button) button.disabled = false;
      return;
    }
    wait.textContent = wait.dataset.retryText.replace("{n}", String(left));
    setTimeout(tick, 1000);
  };
  setTimeout(tick, 1000);
}
