// reportgen's site: sortable and filterable tables and their column groups, the map views
// (own, shared or signed scale, raw map; colour map, opacity), a layer's atlas, the
// comparison grid and keyboard shortcuts. Plain JavaScript, no
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

  // Column groups of a wide table (data-columns): a box per metric group shows or hides
  // its columns, and one more the secondary columns (data-detail) of the groups that have
  // a headline column, off by default: a compact table that still shows every group.
  each(document.querySelectorAll("table[data-columns]"), function (table) {
    var key = "columns:" + (table.id || "table"), groups = [], headline = {};
    each(table.querySelectorAll("thead th[data-group]"), function (th) {
      var g = th.getAttribute("data-group");
      if (groups.indexOf(g) < 0) groups.push(g);
      if (!th.hasAttribute("data-detail")) headline[g] = true;
    });
    var off = memory.get(key) || {detail: true};
    function apply() {
      each(table.querySelectorAll("[data-group]"), function (cell) {
        var g = cell.getAttribute("data-group");
        cell.hidden = Boolean(off[g] || (off.detail && headline[g] && cell.hasAttribute("data-detail")));
      });
    }
    var boxes = groups.concat(["detail"]).map(function (g) {
      var box = element("input", {type: "checkbox", value: g});
      box.checked = !off[g];
      box.addEventListener("change", function () {
        off[g] = !box.checked;
        memory.set(key, off);
        apply();
      });
      var name = g === "detail" ? "secondary columns" : g.replace(/_/g, " ");
      return element("label", {}, [box, " " + name]);
    });
    var anchor = table.parentNode.classList.contains("scroll") ? table.parentNode : table;
    anchor.parentNode.insertBefore(element("fieldset", {class: "columns"},
      [element("legend", {}, ["Columns"])].concat(boxes)), anchor);
    apply();
  });

  // A layer's atlas (layer pages): choosing a tile, typing a number or opening
  // #channel=N shows that channel's top images, each with the field of its peak boxed.
  var atlasBlob = document.getElementById("atlas-data");
  if (atlasBlob) atlas(JSON.parse(atlasBlob.textContent));
  function atlas(data) {
    var picture = document.querySelector("img[data-atlas]"), panel = document.getElementById("channel-detail");
    var form = document.querySelector("form.channel-go"), number = form.querySelector("input[name=channel]");
    var count = data.top.length;
    form.hidden = false;
    function fill(pattern, fields) {
      return pattern.replace(/\{(\w+)\}/g, function (_, name) { return encodeURIComponent(fields[name]); });
    }
    function tile(c, zoom) {
      var side = data.tile * zoom, node = element("span", {class: "atlas-tile", role: "img",
        "aria-label": "tile of channel " + c});
      node.style.width = node.style.height = side + "px";
      node.style.backgroundImage = "url(" + JSON.stringify(picture.src) + ")";
      node.style.backgroundSize = data.columns * side + "px auto";
      node.style.backgroundPosition = (-(c % data.columns) * side) + "px " + (-Math.floor(c / data.columns) * side) + "px";
      return node;
    }
    function show(c) {
      c = Math.max(0, Math.min(count - 1, c));
      number.value = c;
      var silent = data.silent.indexOf(c) >= 0;
      var head = element("h3", {}, ["Channel " + c + " of " + count + (silent ? " (silent)" : "")]);
      var links = element("p", {}, []);
      if (data.pages.indexOf(c) >= 0) {
        links.appendChild(element("a", {href: fill(data.channel_page, {channel: c})}, ["its channel page"]));
        links.appendChild(document.createTextNode(" (top patches, deconvnet projections) · "));
      }
      links.appendChild(element("a", {href: "#channel=" + (c - 1 + count) % count}, ["← channel " + (c - 1 + count) % count]));
      links.appendChild(document.createTextNode(" · "));
      links.appendChild(element("a", {href: "#channel=" + (c + 1) % count}, ["channel " + (c + 1) % count + " →"]));
      var shots = data.top[c].filter(function (found) { return found[1] > 0; }).map(function (found) {
        var name = data.images[found[0]], box = element("span", {class: "field"}, []);
        box.style.top = 100 * found[2] / data.size[0] + "%";
        box.style.left = 100 * found[3] / data.size[1] + "%";
        box.style.height = 100 * (found[4] - found[2]) / data.size[0] + "%";
        box.style.width = 100 * (found[5] - found[3]) / data.size[1] + "%";
        var photo = element("img", {src: fill(data.photo, {image: name}), alt: "photo " + name});
        photo.style.aspectRatio = data.size[1] + " / " + data.size[0];  // as the model saw it
        var frame = element("a", {class: "field-frame", href: fill(data.image_page, {image: name})}, [photo, box]);
        return element("figure", {}, [frame, element("figcaption", {}, [name + " · peak " + found[1]])]);
      });
      panel.textContent = "";
      [head, element("div", {class: "atlas-row"}, [tile(c, 3)].concat(shots)), links].forEach(function (n) {
        panel.appendChild(n);
      });
      panel.hidden = false;
    }
    function fromHash() {
      var match = /channel=(\d+)/.exec(location.hash);
      if (match) show(parseInt(match[1], 10));
    }
    function go(c) {
      c = (c + count) % count;
      if (location.hash === "#channel=" + c) show(c); else location.hash = "channel=" + c;
    }
    picture.addEventListener("click", function (event) {
      var box = picture.getBoundingClientRect(), scale = data.columns * data.tile / box.width;
      var col = Math.floor((event.clientX - box.left) * scale / data.tile);
      var row = Math.floor((event.clientY - box.top) * scale / data.tile);
      if (col < data.columns && row * data.columns + col < count) go(row * data.columns + col);
    });
    form.addEventListener("submit", function (event) { event.preventDefault(); go(parseInt(number.value, 10) || 0); });
    each(form.querySelectorAll("button[data-step]"), function (button) {
      button.addEventListener("click", function () {
        go((parseInt(number.value, 10) || 0) + parseInt(button.getAttribute("data-step"), 10));
      });
    });
    window.addEventListener("hashchange", fromHash);
    fromHash();
  }

  // Heat maps. A page holds each map's server-drawn overlay (own scale, viridis, opacity
  // 0.5). Any other view, colour map or opacity is drawn here, on a canvas laid over the
  // photo, from the map's data script (data-map: it calls reportgenMap with the map's
  // levels as a grey PNG). Scripts and data: URLs, because a page opened from disk may
  // neither fetch a file nor read the pixels of an image it loaded.
  var LEGEND = {
    own: ["this map's min", "its 99th percentile"],
    shared: ["0", "the scale under each map"],
    signed: ["−(99th percentile of |value|)", "+(the same)"],
    raw: ["this map's min", "its 99th percentile"]
  };
  var look = {
    view: LEGEND[memory.get("view")] ? memory.get("view") : "own",
    cmap: "viridis",
    opacity: typeof memory.get("opacity") === "number" ? memory.get("opacity") : 0.5
  };
  each(document.querySelectorAll("select[name=colour-map] option"), function (option) {
    if (option.value === memory.get("cmap")) look.cmap = option.value;  // only one offered
  });
  var maps = {}, waiting = {}, requested = {}, tables = {};
  function script(url, failed) {
    if (requested[url]) return;
    requested[url] = true;
    var tag = element("script", {src: url});
    tag.onerror = failed;
    document.head.appendChild(tag);
  }
  function lut(name) {
    if (!tables[name]) {
      var hex = window.reportgenColours[name], table = new Uint8Array(768);
      for (var i = 0; i < 768; i++) table[i] = parseInt(hex.substr(2 * i, 2), 16);
      tables[name] = table;
    }
    return tables[name];
  }
  function isDefault() { return look.view === "own" && look.cmap === "viridis" && look.opacity === 0.5; }
  window.reportgenMap = function (key, data) {
    var picture = new Image();
    picture.onload = function () {
      var canvas = element("canvas", {width: data.w, height: data.h});
      var pen = canvas.getContext("2d");
      pen.drawImage(picture, 0, 0);
      var px = pen.getImageData(0, 0, data.w, data.h).data, values = new Float32Array(data.w * data.h);
      for (var i = 0; i < values.length; i++) {
        var s = data.signed ? (px[4 * i] - 127) / 127 : px[4 * i] / 255;
        values[i] = data.a * s * Math.abs(s);
      }
      maps[key] = {data: data, values: values};
      (waiting[key] || []).forEach(paint);
      delete waiting[key];
    };
    picture.src = "data:image/png;base64," + data.png;
  };
  function upsample(m, width, height) {
    // bilinear, pixel centres aligned (as the server's overlay): a coarse map's blocks blend
    var w = m.data.w, h = m.data.h, v = m.values;
    if (width === w && height === h) return v;
    var out = new Float32Array(width * height);
    for (var y = 0; y < height; y++) {
      var fy = Math.min(Math.max((y + 0.5) * h / height - 0.5, 0), h - 1);
      var y0 = Math.floor(fy), y1 = Math.min(y0 + 1, h - 1), dy = fy - y0;
      for (var x = 0; x < width; x++) {
        var fx = Math.min(Math.max((x + 0.5) * w / width - 0.5, 0), w - 1);
        var x0 = Math.floor(fx), x1 = Math.min(x0 + 1, w - 1), dx = fx - x0;
        out[y * width + x] = (v[y0 * w + x0] * (1 - dx) + v[y0 * w + x1] * dx) * (1 - dy) +
          (v[y1 * w + x0] * (1 - dx) + v[y1 * w + x1] * dx) * dy;
      }
    }
    return out;
  }
  function span(img, d) {
    if (look.view === "signed") return [-d.top, d.top];
    if (look.view === "shared") return [0, parseFloat(img.getAttribute("data-scale")) || 0];
    return [d.lo, d.hi];
  }
  function short(x) { return Number(x.toPrecision(3)).toString(); }
  function paint(img) {
    if (isDefault() || !window.reportgenColours) return;
    var m = maps[img.getAttribute("data-key")], d = m.data, raw = look.view === "raw";
    var width = raw ? d.w : Math.max(d.w, 224), height = raw ? d.h : Math.max(d.h, 224);
    var values = upsample(m, width, height), range = span(img, d), lo = range[0], size = range[1] - range[0];
    var table = lut(look.view === "signed" ? "RdBu_r" : look.cmap);
    var link = img.parentNode, canvas = link.querySelector("canvas.heat-layer");
    if (!canvas) {
      canvas = element("canvas", {class: "heat-layer", "aria-hidden": "true"});
      link.appendChild(canvas);
    }
    canvas.width = width;
    canvas.height = height;
    var pen = canvas.getContext("2d"), picture = pen.createImageData(width, height);
    for (var i = 0; i < values.length; i++) {
      var value = look.view === "signed" ? values[i] : Math.max(values[i], 0);
      var t = size > 0 ? (value - lo) / size : 0;
      var k = 3 * Math.min(255, Math.max(0, Math.floor(t * 256)));
      picture.data[4 * i] = table[k];
      picture.data[4 * i + 1] = table[k + 1];
      picture.data[4 * i + 2] = table[k + 2];
      picture.data[4 * i + 3] = 255;
    }
    pen.putImageData(picture, 0, 0);
    canvas.style.opacity = raw ? 1 : look.opacity;
    var scale = link.parentNode.querySelector(".scale");
    if (scale) scale.textContent = short(range[0]) + " … " + short(range[1]);
  }
  function request(img) {
    var key = img.getAttribute("data-key");
    if (maps[key]) return paint(img);
    (waiting[key] = waiting[key] || []).push(img);
    script(img.getAttribute("data-map"), function () {  // no data (an older site): its overlay
      (waiting[key] || []).forEach(function (node) {
        node.src = node.getAttribute("data-own");
        node.parentNode.classList.remove("drawn");
        node.title = "this map has no data for the other views: shown on its own scale";
      });
      delete waiting[key];
    });
  }
  var seen = "IntersectionObserver" in window ? new IntersectionObserver(function (entries) {
    entries.forEach(function (entry) {
      if (entry.isIntersecting) { seen.unobserve(entry.target); request(entry.target); }
    });
  }, {rootMargin: "300px"}) : null;
  function applyLook(root) {
    var plain = isDefault();
    document.documentElement.setAttribute("data-view", look.view);
    each(root.querySelectorAll("img[data-map]"), function (img) {
      img.src = img.getAttribute(plain ? "data-own" : "data-photo");
      img.parentNode.classList.toggle("drawn", !plain);
      if (plain) return;
      if (seen) seen.observe(img); else request(img);
    });
    each(document.querySelectorAll("input[name=map-view]"), function (r) { r.checked = r.value === look.view; });
    each(document.querySelectorAll("select[name=colour-map]"), function (s) { s.value = look.cmap; });
    each(document.querySelectorAll("input[name=opacity]"), function (range) {
      range.value = look.opacity;
      range.parentNode.querySelector("output").textContent = look.opacity.toFixed(2);
    });
    each(document.querySelectorAll(".colour-legend"), function (legend) {
      legend.querySelector(".lo").textContent = LEGEND[look.view][0];
      legend.querySelector(".hi").textContent = LEGEND[look.view][1];
      var name = look.view === "signed" ? "RdBu_r" : look.cmap;
      legend.querySelector(".cmap-name").textContent = "(" + name + ")";
      if (!window.reportgenColours) return;
      var table = lut(name), stops = [];
      for (var k = 0; k <= 8; k++) {
        var j = 3 * Math.min(255, k * 32);
        stops.push("rgb(" + table[j] + "," + table[j + 1] + "," + table[j + 2] + ")");
      }
      legend.querySelector(".ramp").style.background = "linear-gradient(to right, " + stops.join(", ") + ")";
    });
  }
  function refresh() {  // a new look, or the colour tables arrived
    applyLook(document);
    each(document.querySelectorAll("img[data-map]"), function (img) {
      if (maps[img.getAttribute("data-key")]) paint(img);
    });
  }
  function change(field, value) {
    look[field] = value;
    memory.set(field, value);
    refresh();
  }
  each(document.querySelectorAll("input[name=map-view]"), function (radio) {
    radio.addEventListener("change", function () { change("view", radio.value); });
  });
  each(document.querySelectorAll("select[name=colour-map]"), function (select) {
    select.parentNode.hidden = false;
    select.addEventListener("change", function () { change("cmap", select.value); });
  });
  // Dragging the opacity only fades the canvases (redrawn once, when they first appear);
  // the default look's server overlays come back when the slider is let go at 0.5.
  each(document.querySelectorAll("input[name=opacity]"), function (range) {
    range.parentNode.hidden = false;
    range.addEventListener("input", function () {
      var drawn = document.querySelector("a.drawn") !== null;
      look.opacity = parseFloat(range.value);
      each(document.querySelectorAll("output.opacity-value"), function (out) { out.textContent = look.opacity.toFixed(2); });
      if (!drawn) return refresh();
      if (look.view !== "raw") {
        each(document.querySelectorAll("canvas.heat-layer"), function (c) { c.style.opacity = look.opacity; });
      }
    });
    range.addEventListener("change", function () { change("opacity", parseFloat(range.value)); });
  });
  if (document.querySelector("img[data-map]") || document.getElementById("compare-data")) {
    var colours = document.body.getAttribute("data-colours");
    if (colours) script(colours);
  }
  window.reportgenColoursReady = refresh;
  applyLook(document);

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
      var link = element("a", {href: path("full_own", image, key), class: "heat"}, [
        element("img", {loading: "lazy", alt: data.titles[key] + " heat map of " + image,
                        src: path("own", image, key), "data-own": path("own", image, key),
                        "data-photo": path("plain_photo", image, key), "data-map": path("map", image, key),
                        "data-key": image + "/" + key, "data-scale": data.scales[key] === null ? "" : data.scales[key]})
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
            element("img", {class: "photo", loading: "lazy", src: path("photo", image, ""), alt: "photo " + image,
                            style: "aspect-ratio: " + data.shapes[image]}),
            image
          ])
        ])].concat(picked.m.map(function (key) { return cell(image, key); })));
      });
      grid.appendChild(element("table", {class: "compare-grid"}, [
        element("thead", {}, [head]), element("tbody", {}, body)
      ]));
      applyLook(grid);
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
