// The console's few behaviours (no inline scripts: the CSP allows 'self' only).
// "Select all" ticks every box of its class; Esc on a confirmation goes back (Cancel);
// a copy button puts its data-copy text on the clipboard.
(function () {
  "use strict";
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
