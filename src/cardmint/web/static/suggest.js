// Search-as-you-type for an input with data-suggest="/url": the URL answers
// {"cards": [{"id", "label"}], "hints": [...]} for ?q=; the suggestions are a listbox
// under the input. ↓/↑ move, Enter picks the highlighted card (else submits the form as
// typed), Escape closes; a click picks too. Picking goes to ?card=ID of the form's page.
(function () {
  "use strict";
  function setup(input) {
    var list = document.getElementById(input.getAttribute("aria-controls"));
    var form = input.form;
    var timer = null, active = -1, asked = 0;
    function options() { return list.querySelectorAll("[role=option]"); }
    function close() {
      list.hidden = true; active = -1;
      input.setAttribute("aria-expanded", "false");
      input.removeAttribute("aria-activedescendant");
    }
    function pick(id) {
      window.location.href = form.getAttribute("action") + "?card=" + encodeURIComponent(id);
    }
    function highlight(i) {
      var opts = options();
      if (!opts.length) { return; }
      active = (i + opts.length) % opts.length;
      opts.forEach(function (o, j) { o.setAttribute("aria-selected", j === active ? "true" : "false"); });
      input.setAttribute("aria-activedescendant", opts[active].id);
    }
    function show(data) {
      list.textContent = "";
      (data.cards || []).forEach(function (c, i) {
        var li = document.createElement("li");
        li.id = "suggestion-" + i;
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", "false");
        li.dataset.id = c.id;
        li.textContent = c.label + " (" + c.id + ")";
        li.addEventListener("mousedown", function (e) { e.preventDefault(); pick(c.id); });
        list.appendChild(li);
      });
      (data.hints || []).forEach(function (h) {
        var li = document.createElement("li");
        li.className = "hint";
        li.textContent = h;
        list.appendChild(li);
      });
      var any = list.children.length > 0;
      list.hidden = !any; active = -1;
      input.setAttribute("aria-expanded", any ? "true" : "false");
    }
    function ask() {
      var q = input.value.trim();
      if (q.length < 2) { close(); return; }
      var mine = ++asked;
      fetch(input.dataset.suggest + "?q=" + encodeURIComponent(q),
            {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : {cards: []}; })
        .then(function (data) { if (mine === asked) { show(data); } })
        .catch(function () { close(); });
    }
    input.addEventListener("input", function () {
      clearTimeout(timer); timer = setTimeout(ask, 150);
    });
    input.addEventListener("keydown", function (e) {
      if (e.key === "ArrowDown" && !list.hidden) { e.preventDefault(); highlight(active + 1); }
      else if (e.key === "ArrowUp" && !list.hidden) { e.preventDefault(); highlight(active - 1); }
      else if (e.key === "Escape") { close(); }
      else if (e.key === "Enter" && active >= 0 && !list.hidden) {
        e.preventDefault(); pick(options()[active].dataset.id);
      }
    });
    input.addEventListener("blur", function () { setTimeout(close, 150); });
  }
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-suggest]").forEach(setup);
  });
})();
