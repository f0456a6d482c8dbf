// The files page's upload: the file goes as the raw body of POST /api/v1/files (the API's
// own upload, streamed to disk on the server, up to FILES_MAX_UPLOAD), with the session's
// CSRF token, and a progress bar. The cap is checked before sending; errors are shown as
// text in the form.

const form = document.getElementById("upload-form");
if (form) {
  const input = form.querySelector('input[type="file"]');
  const nameBox = form.querySelector('input[name="name"]');
  const bar = form.querySelector("progress");
  const error = document.getElementById("upload-error");
  const cap = Number(form.dataset.maxUpload);
  const show = (text) => {
    error.textContent = text;
    error.hidden = false;
  };
  input.addEventListener("change", () => {
    const file = input.files[0];
    // The file's own name, unless the user wrote one.
    if (file && nameBox && (!nameBox.value || nameBox.value === nameBox.dataset.auto)) {
      nameBox.value = file.name;
      nameBox.dataset.auto = file.name;
    }
  });
  form.addEventListener("submit", (evt) => {
    evt.preventDefault();
    error.hidden = true;
    const file = input.files[0];
    if (!file) {
      show(form.dataset.noFile);
      return;
    }
    if (file.size > cap) {
      show(form.dataset.tooLarge.replace("{size}", String(file.size)));
      return;
    }
    const token = form.querySelector('input[name="csrf_token"]').value;
    const name = (nameBox && nameBox.value) || file.name;
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/v1/files?name=${encodeURIComponent(name)}`);
    xhr.setRequestHeader("X-CSRFToken", token);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = e.loaded / e.total;
    });
    bar.hidden = false;
    bar.value = 0;
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) {
        const id = JSON.parse(xhr.responseText).id;
        window.location.assign(`/files?uploaded=${encodeURIComponent(id)}`);
        return;
      }
      bar.hidden = true;
      let text = xhr.statusText;
      try { text = JSON.parse(xhr.responseText).message || text; } catch { /* not JSON */ }
      show(`${xhr.status}: ${text}`);
    });
    xhr.addEventListener("error", () => {
      bar.hidden = true;
      show(form.dataset.failed);
    });
    xhr.send(file);
  });
}
