"""The page's own style and script, inline: nothing is fetched, so the page works offline.

The script makes every table (``table.dt`` from :mod:`.datatable`, ``table.md`` from the Markdown)
sortable by any column (click its header; numbers by their raw value ``data-v`` or the figure's
leading number, n/a and OOM last), filterable by its Model / Size / Method / Technique / Precision /
Task / Load columns (a select per column above the table), and, where it has long columns, gives
them a show/hide toggle. It shows a plot point's hover text (the ``<title>`` of each point of the
SVG overlay drawn over the plot image) in a tooltip. Without script the page still reads: every
column is a plain cell, and the browser shows ``<title>`` on hover itself."""

from __future__ import annotations

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;line-height:1.4;color:#222}
h1{margin:.2em 0 .3em;font-size:1.6em}h1,h2,h3,h4{line-height:1.2}
h2{border-bottom:2px solid #ccc;padding-bottom:.2em;margin-top:2.2em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}th,td{border:1px solid #ccc;padding:.2em .45em}
th{background:#f3f3f3;text-align:left}td{vertical-align:top}.scroll{overflow-x:auto}
.caption{background:#f8f8fb;border-left:4px solid #99b;padding:.3em .8em;margin:.5em 0;font-size:.88em}
.caption p{margin:.3em 0}.caption ul{margin:.2em 0}img{max-width:100%;height:auto;display:block}
figure{margin:1.2em 0}.files{font-size:.85em;color:#555}.absent{color:#a00}
details{margin:.4em 0}summary{cursor:pointer;color:#335}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
nav ul{columns:3;font-size:.9em;margin:.2em 0}code{font-size:.92em}
th.sortable{cursor:pointer}th[data-sort=asc]::after{content:" ▲"}th[data-sort=desc]::after{content:" ▼"}
tr.groups th{background:#e6e9f2;text-align:center;font-weight:600}
table.dt .long{display:none}table.dt.showlong .long{display:table-cell}
.tools{display:flex;gap:.5em;flex-wrap:wrap;margin:.4em 0 0;font-size:.85em}
.tools select,.tools button{font-size:1em}
#headline{margin-top:0}#headline h2{margin-top:.4em}#headline table{font-size:.82em;width:100%}
#headline td,#headline th{padding:.15em .4em}#headline p{margin:.3em 0;font-size:.9em}
.v{font-weight:600;white-space:nowrap;border-radius:3px;padding:0 .3em}
.v-agrees{background:#d8f0d8}.v-disagrees{background:#f6d5d5}.v-tie{background:#f3ecd0}.v-na{background:#e8e8e8}
.plot{position:relative;display:inline-block;max-width:100%}
.plot svg.hover{position:absolute;left:0;top:0;width:100%;height:100%}
.plot svg.hover circle{fill:transparent;stroke:none;cursor:crosshair}
.plot svg.hover circle:hover{stroke:#c00;stroke-width:3}
#tip{position:fixed;z-index:10;background:#223;color:#fff;padding:.3em .5em;font-size:.8em;border-radius:3px;
pointer-events:none;max-width:28em;white-space:pre-line}
dl.glossary dt{font-weight:600;margin-top:.5em}dl.glossary dd{margin-left:1.2em;font-size:.9em}
"""

SCRIPT = r"""
(function () {
  "use strict";
  var FILTER = /^(Model|Size|Method|Technique|Precision|Task|Load)$/;
  var SCALE = {K: 1e3, M: 1e6, B: 1e9, T: 1e12};
  function text(c) { return c ? c.textContent.trim() : ""; }
  function key(c) { return text(c).split(" [")[0]; }  // a value without its note marks
  function num(c) {
    if (!c) return NaN;
    if (c.dataset.v !== undefined && c.dataset.v !== "") return parseFloat(c.dataset.v);
    var m = text(c).match(/^-?\d+(\.\d+)?(e[-+]?\d+)?([KMBT])?/i);
    return m ? parseFloat(m[0]) * (SCALE[(m[3] || "").toUpperCase()] || 1) : NaN;
  }
  function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;"); }
  function enhance(t) {
    var head = t.tHead && t.tHead.rows[t.tHead.rows.length - 1], body = t.tBodies[0];
    if (!head || !body) return;
    var ths = Array.prototype.slice.call(head.cells);
    var rows = function () { return Array.prototype.slice.call(body.rows); };
    ths.forEach(function (th, i) {
      th.classList.add("sortable");
      th.title = (th.title ? th.title + " · " : "") + "click to sort";
      th.addEventListener("click", function () {
        var dir = th.dataset.sort === "asc" ? "desc" : "asc";
        ths.forEach(function (h) { delete h.dataset.sort; });
        th.dataset.sort = dir;
        rows().sort(function (a, b) {
          var x = num(a.cells[i]), y = num(b.cells[i]), c;
          if (isNaN(x) && isNaN(y)) c = text(a.cells[i]).localeCompare(text(b.cells[i]));
          else if (isNaN(x)) return 1;  // n/a, OOM, failed: last either way
          else if (isNaN(y)) return -1;
          else c = x - y;
          return dir === "asc" ? c : -c;
        }).forEach(function (r) { body.appendChild(r); });
      });
    });
    var bar = document.createElement("div"), selects = [];
    bar.className = "tools";
    ths.forEach(function (th, i) {
      var name = text(th).replace(/ [▲▼]$/, "");
      if (!FILTER.test(name)) return;
      var seen = {};
      rows().forEach(function (r) { seen[key(r.cells[i])] = 1; });
      var vals = Object.keys(seen).sort();
      if (vals.length < 2) return;
      var s = document.createElement("select");
      s.dataset.col = i;
      s.setAttribute("aria-label", "filter by " + name);
      s.innerHTML = '<option value="">' + esc(name) + ": all</option>" +
        vals.map(function (v) { return "<option>" + esc(v) + "</option>"; }).join("");
      s.addEventListener("change", function () {
        rows().forEach(function (r) {
          r.hidden = !selects.every(function (x) { return !x.value || key(r.cells[+x.dataset.col]) === x.value; });
        });
      });
      selects.push(s);
      bar.appendChild(s);
    });
    var n = head.querySelectorAll(".long").length;
    if (n) {
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = "Show all columns (+" + n + ")";
      b.addEventListener("click", function () {
        b.textContent = t.classList.toggle("showlong") ? "Hide long columns" : "Show all columns (+" + n + ")";
      });
      bar.appendChild(b);
    }
    var at = t.parentNode.classList.contains("scroll") ? t.parentNode : t;
    if (bar.children.length) at.parentNode.insertBefore(bar, at);
  }
  document.querySelectorAll("table.dt, table.md").forEach(enhance);
  var tip = document.createElement("div");
  tip.id = "tip";
  tip.hidden = true;
  document.body.appendChild(tip);
  document.querySelectorAll(".plot svg.hover circle").forEach(function (c) {
    var t = c.querySelector("title");
    c.addEventListener("mouseenter", function () { tip.textContent = t ? t.textContent : ""; tip.hidden = false; });
    c.addEventListener("mousemove", function (e) {
      tip.style.left = (e.clientX + 12) + "px"; tip.style.top = (e.clientY + 12) + "px";
    });
    c.addEventListener("mouseleave", function () { tip.hidden = true; });
  });
})();
"""
