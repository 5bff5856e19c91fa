// The ops dashboard's few behaviours htmx does not cover.
(function () {
  "use strict";

  // Show whether live updates are flowing; the ws extension reconnects by itself.
  function liveStatus(state, text) {
    var status = document.getElementById("live-status");
    if (status) {
      status.dataset.state = state;
      status.textContent = text;
    }
  }
  document.addEventListener("htmx:wsConnecting", function () { liveStatus("connecting", "Connecting…"); });
  document.addEventListener("htmx:wsOpen", function () { liveStatus("live", "Live"); });
  document.addEventListener("htmx:wsClose", function () { liveStatus("down", "Reconnecting…"); });

  // A pushed card must not wipe out a number an operator is typing: carry the focused
  // field's value and caret into the element that replaces it.
  var typing = null;
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var active = document.activeElement;
    typing = null;
    if (!active || !active.id || active.tagName !== "INPUT" || !event.detail.target.contains(active)) return;
    var incoming = event.detail.fragment.querySelector("#" + CSS.escape(active.id));
    if (!incoming) return;
    incoming.setAttribute("value", active.value);
    typing = { id: active.id, start: active.selectionStart, end: active.selectionEnd };
  });
  document.addEventListener("htmx:oobAfterSwap", function () {
    if (!typing) return;
    var field = document.getElementById(typing.id);
    if (field) {
      field.focus();
      try { field.setSelectionRange(typing.start, typing.end); } catch (e) { /* number inputs have no caret */ }
    }
    typing = null;
  });

  // "Cancel" and "Close" in a dialog dismiss it in place (their href serves pages without JS).
  document.addEventListener("click", function (event) {
    var dismiss = event.target.closest("[data-dismiss]");
    if (!dismiss) return;
    var holder = dismiss.closest("#ops-dialog, #cleanup-panel, #ops-flash");
    if (!holder) return;
    event.preventDefault();
    holder.replaceChildren();
  });
})();
