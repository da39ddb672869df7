// The scan page: each photo is sent as soon as it is chosen (or taken), then followed until
// the worker has read it; its result is shown in the batch list. Photos go one at a time,
// in the order taken, so a slow connection never sends two at once.
(function () {
  "use strict";
  const form = document.getElementById("scan-form");
  const input = document.getElementById("scan-photo");
  const list = document.getElementById("scan-results");
  const empty = document.getElementById("scan-empty");
  if (!form || !input || !list) return;
  const queue = [];
  let sending = false;
  let count = 0;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function show(entry, data) {
    entry.status.className = "badge " + data.status;
    entry.status.textContent = data.status.replace("_", " ");
    entry.detail.textContent = "";
    if (data.photo && !entry.img) {
      entry.img = el("img", "scan-thumb");
      entry.img.src = data.photo;
      entry.img.alt = "Photo " + entry.n;
      entry.li.prepend(entry.img);
    }
    if (data.status === "processed" && data.card) {
      entry.detail.append("Identified: ");
      const a = el("a", "", data.card.name + " · " + data.card.set + " " + data.card.number);
      a.href = "/cards/" + encodeURIComponent(data.card.id);
      entry.detail.append(a);
      if (data.item && data.item.id) {
        entry.detail.append(" — stocked as ");
        const item = el("a", "", "item #" + data.item.id);
        item.href = "/inventory/items/" + data.item.id;
        entry.detail.append(item);
      }
    } else if (data.status === "needs_review") {
      let text = "Sent to review";
      if (data.best) text += " (best guess " + data.best.name + " · " + data.best.set + " " + data.best.number + ")";
      if (data.reasons.length) text += ": " + data.reasons.join("; ");
      entry.detail.append(text + " ");
      const a = el("a", "", "Open the review queue");
      a.href = "/review";
      entry.detail.append(a);
    } else if (data.status === "failed") {
      entry.detail.textContent = "Could not be processed: " + (data.error || "unknown error");
    } else {
      entry.detail.textContent = "Reading the card…";
    }
  }

  async function follow(entry, id) {
    let wait = 500;
    for (let i = 0; i < 240; i++) {
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 1.3, 3000);
      let response;
      try {
        response = await fetch("/scan/captures/" + id, { headers: { Accept: "application/json" } });
      } catch (e) {
        continue; // offline for a moment: try again
      }
      if (!response.ok) { entry.detail.textContent = "Lost track of capture " + id; return; }
      const data = await response.json();
      show(entry, data);
      if (data.done) return;
    }
    entry.detail.textContent = "Still queued: it will show in the inventory or the review queue.";
  }

  async function send(entry) {
    const body = new FormData();
    body.append("csrf", form.elements.csrf.value);
    body.append("condition", form.elements.condition.value);
    body.append("location", form.elements.location.value);
    body.append("image", entry.file, entry.file.name || "photo.jpg");
    let response;
    try {
      response = await fetch(form.action, { method: "POST", body: body,
                                            headers: { Accept: "application/json" } });
    } catch (e) {
      entry.status.className = "badge failed";
      entry.status.textContent = "not sent";
      entry.detail.textContent = "The connection failed; take the photo again.";
      return;
    }
    const data = await response.json().catch(() => ({ error: "HTTP " + response.status }));
    if (!response.ok) {
      entry.status.className = "badge failed";
      entry.status.textContent = "refused";
      entry.detail.textContent = data.error || ("HTTP " + response.status);
      return;
    }
    entry.li.dataset.capture = data.id;
    show(entry, data);
    follow(entry, data.id); // followed in the background; the next photo goes meanwhile
  }

  async function pump() {
    if (sending) return;
    sending = true;
    while (queue.length) await send(queue.shift());
    sending = false;
  }

  function add(file) {
    count += 1;
    const li = el("li", "scan-result");
    const head = el("p", "scan-head");
    head.append(el("strong", "", "Photo " + count + " "));
    const status = el("span", "badge", "sending");
    head.append(status);
    const detail = el("p", "scan-detail", "Uploading…");
    li.append(head, detail);
    list.prepend(li);
    if (empty) empty.hidden = true;
    queue.push({ n: count, file: file, li: li, status: status, detail: detail, img: null });
  }

  function take() {
    for (const file of input.files) add(file);
    input.value = ""; // ready for the next photo
    pump();
  }

  input.addEventListener("change", take);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.files.length) take();
  });
})();
