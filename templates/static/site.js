// Sortable tables (click a heading; the choice is remembered) and keyboard paging.
(function () {
  "use strict";
  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    if (!numeric) return raw.trim().toLowerCase();
    var v = parseFloat(raw);
    return isNaN(v) ? Infinity : v;
  }
  function sortTable(table, index, direction) {
    var th = table.tHead.rows[0].cells[index];
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      return (x < y ? -1 : x > y ? 1 : 0) * (direction === "ascending" ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction);
  }
  function storageKey(table, i) { return "reportgen-sort:" + location.pathname + ":" + i; }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table, t) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, index) {
      th.addEventListener("click", function () {
        var direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        sortTable(table, index, direction);
        try { localStorage.setItem(storageKey(table, t), JSON.stringify([index, direction])); } catch (e) {}
      });
    });
    try {
      var saved = JSON.parse(localStorage.getItem(storageKey(table, t)) || "null");
      if (saved) sortTable(table, saved[0], saved[1]);
    } catch (e) {}
  });
  // Per-image or shared colour scale for heat maps; the choice is remembered.
  var boxes = document.querySelectorAll("input.shared-scale");
  function applyScale(shared) {
    Array.prototype.forEach.call(document.querySelectorAll("img[data-shared]"), function (img) {
      img.src = shared ? img.getAttribute("data-shared") : img.getAttribute("data-own");
    });
    Array.prototype.forEach.call(boxes, function (b) { b.checked = shared; });
  }
  Array.prototype.forEach.call(boxes, function (box) {
    box.addEventListener("change", function () {
      try { localStorage.setItem("reportgen-shared-scale", box.checked ? "1" : "0"); } catch (e) {}
      applyScale(box.checked);
    });
  });
  try { if (localStorage.getItem("reportgen-shared-scale") === "1") applyScale(true); } catch (e) {}
  document.addEventListener("keydown", function (event) {
    if (event.target.closest("input, textarea, select")) return;
    var rel = event.key === "ArrowLeft" || event.key === "k" ? "prev" :
              event.key === "ArrowRight" || event.key === "j" ? "next" : null;
    var link = rel && document.querySelector('a[rel="' + rel + '"]');
    if (link) location.href = link.href;
  });
})();
