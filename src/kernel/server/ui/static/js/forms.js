// Forms with parts that depend on a choice: an element with data-switch="<field>" shows,
// of its [data-when] parts, those whose data-when names the field's value (a radio group or
// a select), and hides the others. Without script every part shows; the server reads only
// the parts of the choice made.

function apply(box) {
  const name = box.dataset.switch;
  const field = box.querySelector(`select[name="${name}"]`);
  const checked = box.querySelector(`input[name="${name}"]:checked`);
  const value = field ? field.value : checked ? checked.value : "";
  for (const part of box.querySelectorAll("[data-when]")) {
    part.hidden = !part.dataset.when.split(" ").includes(value);
  }
}

for (const box of document.querySelectorAll("[data-switch]")) {
  apply(box);
  box.addEventListener("change", (evt) => {
    if (evt.target.name === box.dataset.switch) apply(box);
  });
}
