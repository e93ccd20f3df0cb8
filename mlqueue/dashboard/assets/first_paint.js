/* mlqueue dashboard: the Jobs page's first rows, drawn by the HQ into the HTML page (first_paint.py),
 * stay over the page until the real grid has drawn rows of its own (or shows it has none, or the page
 * shows an error, or another page is open); then they are removed. */
(function () {
  "use strict";
  var DONE = [
    "#jobs-grid .ag-center-cols-container .ag-row:not(.ag-row-loading) [col-id]:not(:empty)",
    "#jobs-grid .ag-overlay-no-rows-wrapper",
    "#page .message"
  ].join(", ");

  function settled() {
    var preview = document.getElementById("jobs-preview");
    if (!preview) { return true; }
    var page = document.getElementById("page");
    var elsewhere = page && page.firstChild && !document.getElementById("jobs-grid");
    if (elsewhere || document.querySelector(DONE)) {
      preview.remove();
      return true;
    }
    return false;
  }

  if (settled()) { return; }
  var observer = new MutationObserver(function () { if (settled()) { observer.disconnect(); } });
  observer.observe(document.body, {childList: true, subtree: true});
})();
