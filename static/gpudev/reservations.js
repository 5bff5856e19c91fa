// Three small behaviours htmx does not cover: copying the SSH command, ticking the time left
// between server updates (a local clock from data-expires-at, no requests), and showing the card
// of a reservation this page has not seen yet (made in another tab), which arrives as an
// out-of-band swap with no element to replace.
(function () {
  "use strict";

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button.copy[data-copy]");
    if (!button) return;
    navigator.clipboard.writeText(button.dataset.copy).then(function () {
      button.textContent = "Copied";
      button.classList.add("copied");
      setTimeout(function () {
        button.textContent = "Copy";
        button.classList.remove("copied");
      }, 1500);
    });
  });

  function timeLeft(ms) {
    var seconds = Math.max(0, Math.round(ms / 1000));
    if (seconds < 90) return seconds + " s";
    var minutes = Math.round(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    return hours + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function tick() {
    document.querySelectorAll("[data-expires-at]").forEach(function (element) {
      element.textContent = timeLeft(Date.parse(element.dataset.expiresAt) - Date.now());
    });
  }

  setInterval(tick, 1000);

  document.body.addEventListener("htmx:oobErrorNoTarget", function (event) {
    var card = event.detail.content;
    var list = document.getElementById("reservations");
    if (!list || !card || !card.id || card.id.indexOf("reservation-") !== 0) return;
    card.removeAttribute("hx-swap-oob");
    var empty = list.querySelector(".empty");
    if (empty) empty.remove();
    list.prepend(card);
    htmx.process(card);
  });
})();
