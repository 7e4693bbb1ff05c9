// reportgen's site: sortable and filterable tables, the map view (overlay on its own or the
// shared scale, raw map), the comparison grid and keyboard shortcuts. Plain JavaScript, no
// dependencies; choices are remembered in localStorage. Works from disk and under any prefix.
(function () {
  "use strict";
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }
  var memory = {
    get: function (key) {
      try { return JSON.parse(localStorage.getItem("reportgen:" + key)); } catch (e) { return null; }
    },
    set: function (key, value) {
      try { localStorage.setItem("reportgen:" + key, JSON.stringify(value)); } catch (e) { /* private mode */ }
    }
  };
  function element(tag, attributes, children) {
    var node = document.createElement(tag);
    Object.keys(attributes || {}).forEach(function (name) { node.setAttribute(name, attributes[name]); });
    (children || []).forEach(function (child) {
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    });
    return node;
  }

  // Colour theme: the system's, light or dark, switched by the button in the header and
  // remembered for every page.
  var THEMES = ["system", "light", "dark"];
  function applyTheme(theme) {
    if (theme === "system") document.documentElement.removeAttribute("data-theme");
    else document.documentElement.setAttribute("data-theme", theme);
    var next = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
    each(document.querySelectorAll(".theme-toggle"), function (button) {
      button.hidden = false;  // it needs this script: without it the page follows the system
      button.textContent = "Theme: " + theme;
      button.title = "Colour theme: " + (theme === "system" ? "as the system" : theme) +
                     "; click for " + (next === "system" ? "the system's" : next);
    });
  }
  var theme = THEMES.indexOf(memory.get("theme")) >= 0 ? memory.get("theme") : "system";
  applyTheme(theme);
  each(document.querySelectorAll(".theme-toggle"), function (button) {
    button.addEventListener("click", function () {
      theme = THEMES[(THEMES.indexOf(theme) + 1) % THEMES.length];
      memory.set("theme", theme);
      applyTheme(theme);
    });
  });

  // Tables: click a heading to sort, type in the box above to filter rows.
  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent;
    if (!numeric) return raw.trim().toLowerCase();
    var v = parseFloat(raw);
    return isNaN(v) ? Infinity : v;
  }
  function sortTable(table, index, direction) {
    var th = table.tHead.rows[0].cells[index];
    if (!th) return;
    var numeric = th.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      return (x < y ? -1 : x > y ? 1 : 0) * (direction === "ascending" ? 1 : -1);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    each(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", direction);
  }
  function filterTable(table, text, count) {
    var terms = text.toLowerCase().split(/\s+/).filter(Boolean);
    var rows = table.tBodies[0].rows, shown = 0;
    each(rows, function (row) {
      var content = row.textContent.toLowerCase();
      row.hidden = !terms.every(function (t) { return content.indexOf(t) >= 0; });
      shown += row.hidden ? 0 : 1;
    });
    count.textContent = terms.length ? shown + " of " + rows.length + " rows" : "";
  }
  each(document.querySelectorAll("table.sortable"), function (table, t) {
    var key = location.pathname + "#" + (table.id || t);
    each(table.tHead.rows[0].cells, function (th, index) {
      th.tabIndex = 0;
      function sort() {
        var direction = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
        sortTable(table, index, direction);
        memory.set("sort:" + key, [index, direction]);
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (event) { if (event.key === "Enter") sort(); });
    });
    var input = element("input", {type: "search", class: "filter", placeholder: "Filter rows",
                                  "aria-label": "Filter the rows of this table"});
    var count = element("span", {class: "muted filter-count", "aria-live": "polite"});
    var anchor = table.parentNode.classList.contains("scroll") ? table.parentNode : table;
    anchor.parentNode.insertBefore(element("p", {class: "filter-box"}, [input, " ", count]), anchor);
    input.addEventListener("input", function () {
      filterTable(table, input.value, count);
      memory.set("filter:" + key, input.value);
    });
    var sorted = memory.get("sort:" + key);
    if (sorted) sortTable(table, sorted[0], sorted[1]);
    input.value = memory.get("filter:" + key) || "";
    if (input.value) filterTable(table, input.value, count);
  });

  // Heat maps: every element with data-own / data-shared / data-raw shows that view
  // (src of an image, href of its link); the legend's labels follow.
  var LEGEND = {
    own: ["this map's min", "this map's max"],
    shared: ["0", "the scale under each map"],
    raw: ["this map's min", "this map's max"]
  };
  var view = LEGEND[memory.get("view")] ? memory.get("view") : "own";
  function showView(root) {
    document.documentElement.setAttribute("data-view", view);
    each(root.querySelectorAll("[data-raw]"), function (node) {
      node.setAttribute(node.tagName === "IMG" ? "src" : "href", node.getAttribute("data-" + view));
    });
    each(document.querySelectorAll("input[name=map-view]"), function (r) { r.checked = r.value === view; });
    each(document.querySelectorAll(".colour-legend"), function (legend) {
      legend.querySelector(".lo").textContent = LEGEND[view][0];
      legend.querySelector(".hi").textContent = LEGEND[view][1];
    });
  }
  each(document.querySelectorAll("input[name=map-view]"), function (radio) {
    radio.addEventListener("change", function () {
      view = radio.value;
      memory.set("view", view);
      showView(document);
    });
  });
  showView(document);

  // Comparison grid (compare.html), drawn from the JSON embedded in the page.
  var blob = document.getElementById("compare-data");
  if (blob) compare(JSON.parse(blob.textContent));
  function compare(data) {
    var form = document.getElementById("compare-form");
    var grid = document.getElementById("compare-grid");
    var empty = document.getElementById("compare-empty");
    function path(kind, image, key) {
      var at = key.indexOf("@");
      return data.paths[kind].replace("{image}", image)
        .replace("{method}", key.slice(0, at)).replace("{layer}", key.slice(at + 1));
    }
    function number(value, digits) { return value === null ? "–" : value.toFixed(digits); }
    function scores(values) {
      var list = element("dl", {class: "scores"}, []);
      data.metrics.forEach(function (m, i) {
        if (values[i] === null || values[i] === undefined) return;
        list.appendChild(element("dt", {}, [m.short]));
        list.appendChild(element("dd", {}, [number(values[i], m.digits) + (m.percent ? " %" : "")]));
      });
      return list;
    }
    function cell(image, key) {
      var values = (data.scores[image] || {})[key];
      if (!values) return element("td", {class: "muted"}, ["not computed"]);
      var sources = {"data-own": path("own", image, key), "data-shared": path("shared", image, key),
                     "data-raw": path("raw", image, key)};
      var link = element("a", {"data-own": path("full_own", image, key),
                               "data-shared": path("full_shared", image, key),
                               "data-raw": path("raw", image, key)}, [
        element("img", Object.assign({loading: "lazy", alt: data.titles[key] + " heat map of " + image}, sources))
      ]);
      var scale = data.scales[key] === null ? "–" : String(data.scales[key]);
      return element("td", {}, [element("figure", {class: "map", style: "--shape: " + data.shapes[image]}, [
        link, element("span", {class: "scale"}, ["0 … " + scale]), scores(values)
      ])]);
    }
    function selection() {
      var picked = {};
      ["m", "i"].forEach(function (name) {
        picked[name] = Array.prototype.map.call(
          form.querySelectorAll("input[name=" + name + "]:checked"), function (box) { return box.value; });
      });
      return picked;
    }
    function draw() {
      var picked = selection();
      var hash = "#m=" + picked.m.join(",") + "&i=" + picked.i.join(",");
      if (location.hash !== hash) {
        try { history.replaceState(null, "", hash); } catch (e) { location.replace(hash); }
      }
      memory.set("compare", picked);
      grid.textContent = "";
      empty.hidden = picked.m.length > 0 && picked.i.length > 0;
      if (!empty.hidden) return;
      var head = element("tr", {}, [element("th", {}, ["Image"])].concat(picked.m.map(function (key) {
        var at = key.indexOf("@");
        return element("th", {}, [
          element("a", {href: path("method_page", "", key)}, [data.titles[key]]), " ",
          element("span", {class: "muted"}, ["@ " + key.slice(at + 1)])
        ]);
      })));
      var body = picked.i.map(function (image) {
        return element("tr", {}, [element("th", {}, [
          element("a", {href: path("image_page", image, "")}, [
            element("img", {class: "photo", loading: "lazy", src: path("photo", image, ""), alt: "photo " + image}),
            image
          ])
        ])].concat(picked.m.map(function (key) { return cell(image, key); })));
      });
      grid.appendChild(element("table", {class: "compare-grid"}, [
        element("thead", {}, [head]), element("tbody", {}, body)
      ]));
      showView(grid);
    }
    function pick(picked) {
      ["m", "i"].forEach(function (name) {
        each(form.querySelectorAll("input[name=" + name + "]"), function (box) {
          box.checked = picked[name].indexOf(box.value) >= 0;
        });
      });
      draw();
    }
    function fromHash() {
      var picked = {m: data["default"].m, i: data["default"].i};
      location.hash.slice(1).split("&").forEach(function (part) {
        var pair = part.split("=");
        if (pair[0] in picked && pair.length === 2) {
          picked[pair[0]] = decodeURIComponent(pair[1]).split(",").filter(Boolean);
        }
      });
      return picked;
    }
    form.addEventListener("change", draw);
    each(form.querySelectorAll("button[data-check]"), function (button) {
      button.addEventListener("click", function () {
        each(form.querySelectorAll("input[name=" + button.getAttribute("data-check") + "]"), function (box) {
          box.checked = button.getAttribute("data-value") === "all";
        });
        draw();
      });
    });
    document.getElementById("compare-default").addEventListener("click", function () {
      pick(data["default"]);
    });
    window.addEventListener("hashchange", function () { pick(fromHash()); });
    pick(location.hash.length > 1 ? fromHash() : memory.get("compare") || data["default"]);
  }

  // Keyboard: links carry their keys in data-key; "?" shows the list of shortcuts.
  var help = document.getElementById("shortcuts");
  var helpButton = document.querySelector(".help-toggle");
  function toggleHelp(show) {
    help.hidden = !show;
    helpButton.setAttribute("aria-expanded", String(show));
  }
  helpButton.addEventListener("click", function () { toggleHelp(help.hidden); });
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.target.closest("input, textarea, select")) return;
    if (event.key === "?") return toggleHelp(help.hidden);
    if (event.key === "Escape") return toggleHelp(false);
    var link = Array.prototype.find.call(document.querySelectorAll("a[data-key]"), function (a) {
      return a.getAttribute("data-key").split(" ").indexOf(event.key) >= 0;
    });
    if (link) location.href = link.href;
  });
})();
