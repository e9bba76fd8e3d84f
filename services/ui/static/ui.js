// The dashboard's only script: it refreshes the parts of a page marked data-live by
// fetching their server-rendered HTML again. No inline script anywhere (the pages'
// Content-Security-Policy forbids it); every value in that HTML is escaped by the server.
(function () {
  "use strict";

  var status = document.getElementById("live-status");

  function show(state, text) {
    if (!status) return;
    status.className = "live-status " + state;
    status.textContent = text;
  }

  function busy(el) {
    // Leave a region alone while someone is using it: an open confirmation, a focused field.
    if (el.querySelector("details[open]")) return true;
    var active = document.activeElement;
    return !!(active && el.contains(active) && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(active.tagName));
  }

  function refresh(el) {
    if (document.hidden || busy(el)) return;
    fetch(el.getAttribute("data-live"), {
      headers: { "X-Taskrouter-Fragment": "1" },
      credentials: "same-origin",
      cache: "no-store",
    })
      .then(function (r) {
        if (r.status === 401) {
          window.location.reload(); // logged out: the page sends the browser to the login form
          return null;
        }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        if (html === null || busy(el)) return;
        el.innerHTML = html;
        show("ok", "live");
      })
      .catch(function () {
        show("down", "updates paused: the server does not answer");
      });
  }

  var regions = document.querySelectorAll("[data-live]");
  Array.prototype.forEach.call(regions, function (el) {
    var every = parseInt(el.getAttribute("data-every") || "3000", 10);
    window.setInterval(function () { refresh(el); }, Math.max(1000, every));
  });
  if (regions.length) show("ok", "live");
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) Array.prototype.forEach.call(regions, refresh);
  });
})();
