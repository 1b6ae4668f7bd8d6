// The dashboard's only script. Served from the dashboard's own origin
// (Content-Security-Policy: script-src 'self', no inline script). Every
// value shown comes from the network and may be hostile: it is only ever
// set with textContent, never parsed as markup.
"use strict";

(function () {
  var body = document.body;

  // Pages of figures reload their <main> in place every data-refresh
  // seconds (the server's own escaped HTML), keeping the scroll position.
  var refresh = parseInt(body.dataset.refresh || "0", 10);
  if (refresh > 0) {
    setInterval(function () {
      fetch(location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error(r.status)); })
        .then(function (html) {
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("main");
          var cur = document.getElementById("main");
          if (fresh && cur) { cur.replaceWith(document.importNode(fresh, true)); }
        })
        .catch(function () { /* keep the last figures; the next tick retries */ });
    }, refresh * 1000);
  }

  var tap = document.getElementById("tap");
  if (tap && tap.dataset.stream) { startTap(tap); }

  function startTap(section) {
    var rows = document.getElementById("tap-rows");
    var state = document.getElementById("tap-state");
    var count = document.getElementById("tap-count");
    var pause = document.getElementById("tap-pause");
    var byKey = new Map();
    var seen = 0;
    var paused = false;
    var maxRows = 500;
    var es = new EventSource(section.dataset.stream);

    pause.addEventListener("click", function () {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
    });
    es.addEventListener("open", function () { state.textContent = "live"; });
    es.addEventListener("tap", function (m) {
      var ev = JSON.parse(m.data);
      if (ev.kind === "request") {
        seen++;
        count.textContent = String(seen);
      }
      if (paused) { return; }
      render(ev);
    });
    es.addEventListener("failure", function (m) {
      var p = JSON.parse(m.data);
      es.close();
      state.textContent = "stopped";
      document.getElementById("tap-problem-text").textContent = p.Message + ".";
      var doc = document.getElementById("tap-problem-doc");
      if (typeof p.Doc === "string" && p.Doc.indexOf("https://") === 0) { doc.href = p.Doc; }
      document.getElementById("tap-problem").classList.remove("hidden");
    });
    es.addEventListener("end", function () { es.close(); state.textContent = "ended"; });
    es.onerror = function () {
      if (es.readyState === EventSource.CLOSED) { state.textContent = "disconnected"; }
      else { state.textContent = "reconnecting"; }
    };

    var columns = ["time", "direction", "pod", "from", "to", "tls", "method", "authority", "path", "route", "status", "latency", "bytes"];

    function render(ev) {
      var tr = byKey.get(ev.key);
      if (!tr) {
        if (ev.kind !== "request") { return; } // its request was before this page
        tr = document.createElement("tr");
        tr.className = "tap-row";
        columns.forEach(function (c) {
          var td = document.createElement("td");
          td.className = c;
          tr.appendChild(td);
        });
        rows.insertBefore(tr, rows.firstChild);
        byKey.set(ev.key, tr);
        while (rows.childElementCount > maxRows) {
          var last = rows.lastElementChild;
          byKey.forEach(function (v, k) { if (v === last) { byKey.delete(k); } });
          rows.removeChild(last);
        }
      }
      var cell = function (c, v) { tr.querySelector("td." + c).textContent = v; };
      if (ev.kind === "request") {
        cell("time", ev.time);
        cell("direction", ev.direction);
        cell("pod", ev.pod || "");
        cell("from", ev.sourceIdentity || ev.source);
        cell("to", ev.destinationIdentity || ev.destination);
        cell("tls", ev.tls ? "yes" : "no");
        cell("method", ev.method);
        cell("authority", ev.authority);
        cell("path", ev.path);
        cell("route", ev.route || "");
      } else if (ev.kind === "response") {
        cell("status", String(ev.status || ""));
        if (ev.status >= 500) { tr.classList.add("status-err"); }
      } else if (ev.kind === "end") {
        cell("latency", (ev.latencyMs || 0).toFixed(1) + " ms");
        cell("bytes", String(ev.bytes || 0));
        if (ev.grpcStatus !== undefined) {
          cell("status", tr.querySelector("td.status").textContent + " grpc " + ev.grpcStatus);
          if (ev.grpcStatus !== 0) { tr.classList.add("status-err"); }
        }
        if (ev.error) { cell("status", ev.error); tr.classList.add("status-err"); }
      }
    }
  }
})();
