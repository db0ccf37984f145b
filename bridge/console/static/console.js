// The console's few behaviours (no inline scripts: the CSP allows 'self' only).
// "Select all" ticks every box of its class; Esc on a confirmation goes back (Cancel);
// a copy button puts its data-copy text on the clipboard; a form with data-busy="ID" shows
// element ID ("Searching…") while its request runs (the next page replaces it).
(function () {
  "use strict";
  if (window.bridgeConsole) return; // loaded once per page, whatever includes it
  window.bridgeConsole = true;
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var busy = form && form.getAttribute && form.getAttribute("data-busy");
    if (!busy) return;
    var status = document.getElementById(busy);
    if (status) status.hidden = false;
    form.setAttribute("aria-busy", "true");
  });
  // Back to a page from the browser's cache: the request it waited for is over.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-busy]").forEach(function (form) {
      var status = document.getElementById(form.getAttribute("data-busy"));
      if (status) status.hidden = true;
      form.removeAttribute("aria-busy");
    });
  });
  document.addEventListener("change", function (event) {
    var box = event.target;
    var cls = box && box.getAttribute && box.getAttribute("data-select-all");
    if (!cls) return;
    document.querySelectorAll("input." + cls).forEach(function (other) {
      other.checked = box.checked;
    });
  });
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") return;
    var confirm = document.querySelector("[data-cancel]");
    if (confirm) window.location.assign(confirm.getAttribute("data-cancel"));
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var done = function () { button.textContent = "Copied"; };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy"); done(); } catch (e) { /* nothing to copy to */ }
      area.remove();
    }
  });
})();
