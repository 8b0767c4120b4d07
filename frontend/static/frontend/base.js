// Every page: behaviour that used to sit in inline handlers, which the Content-Security-Policy
// (script-src 'self', no 'unsafe-inline') does not run.

// The team switcher submits as soon as another team is chosen (its button shows only without JS).
for (const select of document.querySelectorAll("form.team-switch select[name=team]")) {
  select.addEventListener("change", () => select.form.submit());
}
