// The operations dashboard refreshes itself: every few seconds it fetches its panels
// (/dashboard/fragment) and swaps them in. Plain fetch, no library. A failed refresh
// keeps the last panels and says since when they are stale; the overall status is
// announced to screen readers only when it changes.
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  if (!root) { return; }
  var url = root.getAttribute("data-refresh-url");
  var every = Math.max(2, Number(root.getAttribute("data-refresh-s")) || 5) * 1000;
  var line = document.getElementById("dash-refresh");
  var announce = document.getElementById("dash-announce");
  var timer = null;

  function current() { return root.querySelector(".dash"); }
  function status() { var d = current(); return d ? d.getAttribute("data-status") : null; }
  function takenAt() { var d = current(); return d ? d.getAttribute("data-taken-at") : ""; }

  function say(text, stale) {
    line.textContent = text;
    line.classList.toggle("stale", Boolean(stale));
  }

  function updated() {
    say("Updated " + takenAt().slice(11, 19) + " UTC; refreshes every " + every / 1000 + " s.",
        false);
  }

  function swap(html) {
    var before = status();
    var holder = document.createElement("template");
    holder.innerHTML = html;
    root.replaceChildren(holder.content);
    var after = status();
    if (after !== before) { announce.textContent = "Overall status: " + after; }
    updated();
  }

  function stale(reason) {
    say("Not refreshed since " + takenAt().slice(11, 19) + " UTC: " + reason, true);
  }

  async function refresh() {
    timer = null;
    try {
      var response = await fetch(url, {credentials: "same-origin", cache: "no-store",
                                       headers: {"Accept": "text/html"}});
      if (response.status === 401 || response.status === 403) {
        stale("your sign-in ended or does not allow the dashboard; reload the page.");
        return;  // no point asking again with the same cookie
      }
      if (!response.ok) {
        stale("the server answered " + response.status + ".");
      } else {
        swap(await response.text());
      }
    } catch (err) {
      stale("the server did not answer.");
    }
    schedule();
  }

  function schedule() {
    if (timer === null && document.visibilityState !== "hidden") {
      timer = window.setTimeout(refresh, every);
    }
  }

  // a hidden tab does not poll; it refreshes at once when shown again
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible" && timer === null) { refresh(); }
  });
  updated();
  schedule();
}());
