// The files page: a large file shows its upload's progress, then that the server is
// reading it; the answer (the preview or the import's report) replaces the page. Without
// JavaScript the form posts as usual and the page answers when the file is read.
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.id !== "file-form" || !window.FormData) {
    return;
  }
  event.preventDefault();
  const data = new FormData(form);
  if (event.submitter && event.submitter.name) {
    data.set(event.submitter.name, event.submitter.value);
  }
  const status = document.getElementById("file-progress");
  const bar = status.querySelector("progress");
  const words = status.querySelector("span");
  status.hidden = false;
  for (const button of form.querySelectorAll("button")) { button.disabled = true; }
  const xhr = new XMLHttpRequest();
  xhr.open("POST", form.getAttribute("action"));  // form.action is the "action" button
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) {
      bar.max = e.total;
      bar.value = e.loaded;
      words.textContent = `Sending the file: ${Math.round((100 * e.loaded) / e.total)} %`;
    }
  });
  xhr.upload.addEventListener("load", () => {
    bar.removeAttribute("value");  // indeterminate: the server reads and matches the rows
    words.textContent = "Reading and matching the rows (100,000 take about half a minute)…";
  });
  xhr.addEventListener("load", () => {
    const page = new DOMParser().parseFromString(xhr.responseText, "text/html");
    document.title = page.title;
    document.body.replaceWith(page.body);
  });
  xhr.addEventListener("error", () => {
    words.textContent = "The file could not be sent. Check the connection and try again.";
    for (const button of form.querySelectorAll("button")) { button.disabled = false; }
  });
  xhr.send(data);
});
