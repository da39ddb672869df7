// Card pictures come from assets.tcgdex.net; offline (or when TCGdex has no scan) the
// browser's broken-image box would show. Mark such an image missing so the placeholder
// under it shows instead. Loaded in <head>, before any image can fail: an image's
// `error` event does not bubble, so it is caught on the way down (capture).
(function () {
  "use strict";
  function missing(img) {
    if (img.closest(".card-img")) { img.classList.add("missing"); }
  }
  document.addEventListener("error", function (event) {
    if (event.target && event.target.tagName === "IMG") { missing(event.target); }
  }, true);
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".card-img img").forEach(function (img) {
      if (img.complete && img.naturalWidth === 0) { missing(img); }
    });
  });
})();
