// Bulkhead dashboard: refreshes the live panels (traffic, guard) every few seconds.
// Served as a file so the Content-Security-Policy needs no inline script. The HTML
// comes from the server's templates, already escaped; nothing here builds markup.
"use strict";
(function () {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.getAttribute("content") : "";
  document.querySelectorAll("[data-panel]").forEach(function (panel) {
    const name = panel.getAttribute("data-panel");
    const secs = Math.max(2, parseInt(panel.getAttribute("data-refresh-secs") || "5", 10));
    setInterval(function () {
      if (document.hidden) return;
      fetch("/dashboard/api/" + encodeURIComponent(name), {
        credentials: "same-origin",
        headers: { "x-csrf-token": csrf, accept: "application/json" },
      })
        .then(function (r) {
          if (r.status === 401) { window.location.assign("/dashboard/login"); return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (body) {
          if (body && typeof body.html === "string") panel.innerHTML = body.html;
        })
        .catch(function () { /* the next tick tries again */ });
    }, secs * 1000);
  });
  // Destructive actions ask first.
  document.querySelectorAll('button[data-action="quarantine"]').forEach(function (b) {
    b.form.addEventListener("submit", function (e) {
      if (!window.confirm("Quarantine this tenant? Its keys get 403 until it is released.")) e.preventDefault();
    });
  });
})();
