// The console works without this file; it only saves a click or two.
document.addEventListener("DOMContentLoaded", () => {
  // Filters that apply as soon as they change.
  for (const el of document.querySelectorAll("select[data-autosubmit]")) {
    el.addEventListener("change", () => el.form.requestSubmit());
  }
  // Subject lookup by identity: the chosen field names its collection.
  const field = document.getElementById("field");
  const coll = document.getElementById("collection");
  if (field && coll) {
    const sync = () => { coll.value = field.selectedOptions[0]?.dataset.collection || ""; };
    field.addEventListener("change", sync);
    sync();
  }
  // After a failed form, put the keyboard where the problem is said.
  const alert = document.querySelector("[role=alert]");
  if (alert && !document.querySelector("[autofocus]")) {
    document.getElementById("main")?.focus();
  }
});
