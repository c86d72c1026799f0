// fedgate console: the little it does beyond plain HTML. Pages work without it.
"use strict";
document.addEventListener("submit", function (ev) {
  // Revocations take a grant away at once: ask first.
  var b = ev.submitter;
  if (b && b.dataset.confirm && !window.confirm(b.dataset.confirm)) {
    ev.preventDefault();
    return;
  }
  // One click, one decision: a second click while the first is on its way would send twice.
  if (b) {
    setTimeout(function () { b.disabled = true; }, 0);
  }
});
