// The status page refreshes itself from /status.json (same filters as the
// page) once a second. Values are updated in place: every element with a
// data-j path shows that value of the JSON, formatted by its data-k kind
// as the server formats it (status/page.go Format). When the routes,
// targets or lists change shape, the page's <main> is fetched again.
// The actions send the admin token in a header, which only this script
// can do: without JavaScript the page is read-only.
"use strict";
(function () {
  const period = 1000;
  const query = location.search;
  let shape = null;
  let busy = false;

  function human(n, unit) {
    if (n < 1024) return n.toFixed(0) + " " + unit;
    const exp = Math.min(Math.floor(Math.log(n) / Math.log(1024)), 5);
    return (n / Math.pow(1024, exp)).toFixed(1) + " " + "KMGTP"[exp - 1] + "i" + unit;
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function duration(s) {
    if (s <= 0) return "0 s";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1000).toFixed(0) + " ms";
    if (s < 60) return s.toFixed(1) + " s";
    s = Math.floor(s);
    if (s < 3600) return Math.floor(s / 60) + "m" + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + pad(Math.floor(s % 3600 / 60)) + "m";
    return Math.floor(s / 86400) + "d" + pad(Math.floor(s % 86400 / 3600)) + "h";
  }
  function format(kind, v) {
    switch (kind) {
      case "state": return String(v).toUpperCase();
      case "bool": return v ? "yes" : "";
      case "held": return v ? "operator" : "";
      case "etcd": return v ? "connected" : "disconnected";
      case "int": return Number(v).toFixed(0);
      case "float": return Number(v).toFixed(2);
      case "rate": return Number(v).toFixed(1) + "/s";
      case "bytes": return human(Number(v), "B");
      case "bytes/s": return human(Number(v), "B/s");
      case "seconds": return duration(Number(v));
      case "time": return (!v || v.startsWith("0001-")) ? "never" : v.replace(/\.\d+/, "").replace("+00:00", "Z");
    }
    return v == null ? "" : String(v);
  }
  function get(obj, path) {
    for (const p of path.split(".")) {
      if (obj == null) return undefined;
      obj = obj[p];
    }
    return obj;
  }
  function shapeOf(s) {
    const routes = (s.routes || []).map(r => r.route + ":" + (r.targets || []).map(t => t.target).join(","));
    const n = a => (a || []).length;
    return [routes.join("|"), n(s.identify.matched), n(s.guard.banned), n(s.guard.top_sources),
      n(s.udp.protocols), n(s.connections.listed), s.cluster.distributed, (s.cluster.members || []).map(m => m.id).join(","),
      s.totals.draining].join("#");
  }
  function apply(s) {
    for (const el of document.querySelectorAll("[data-j]")) {
      const v = get(s, el.dataset.j);
      if (v === undefined) continue;
      // As status/page.go Cell: no check, no check duration.
      const noCheck = el.dataset.f === "check_duration_seconds" && get(s, el.dataset.j.replace(/check_duration_seconds$/, "check")) === "";
      el.textContent = noCheck ? "" : format(el.dataset.k, v);
    }
    for (const row of document.querySelectorAll("[data-state-j]")) {
      const v = get(s, row.dataset.stateJ);
      if (v !== undefined) row.className = "st-" + v;
    }
  }
  async function refetchMain() {
    const r = await fetch("/status" + query, { cache: "no-store" });
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    const main = doc.getElementById("main");
    if (main) document.getElementById("main").replaceWith(main);
    showActions();
  }
  async function poll() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/status.json" + query, { cache: "no-store" });
      const s = await r.json();
      const sh = shapeOf(s);
      if (sh !== shape) {
        await refetchMain();
        shape = sh;
      }
      apply(s);
      live.textContent = "live · updated " + new Date().toLocaleTimeString();
      live.className = "muted";
    } catch (e) {
      live.textContent = "not updating: " + e;
      live.className = "problem";
    } finally {
      busy = false;
    }
  }
  function showActions() {
    if (document.body.dataset.admin !== "true") return;
    document.getElementById("admin").hidden = false;
    for (const el of document.querySelectorAll(".act")) el.hidden = false;
  }
  async function act(btn) {
    const token = document.getElementById("token");
    sessionStorage.setItem("protoplex-token", token.value);
    const body = new URLSearchParams();
    for (const k of ["route", "target", "state", "addr", "id"]) {
      if (btn.dataset[k] !== undefined) body.set(k, btn.dataset[k]);
    }
    const out = document.getElementById("result");
    try {
      const r = await fetch("/status/" + btn.dataset.act, {
        method: "POST", body, headers: { "X-Protoplex-Token": token.value },
      });
      const res = await r.json();
      out.textContent = (res.ok ? "done: " : "refused: ") + res.message;
      out.className = res.ok ? "" : "problem";
    } catch (e) {
      out.textContent = "failed: " + e;
    }
    poll();
  }
  const live = document.getElementById("live");
  document.addEventListener("click", e => {
    const btn = e.target.closest("button[data-act]");
    if (btn) act(btn);
  });
  const token = document.getElementById("token");
  token.value = sessionStorage.getItem("protoplex-token") || "";
  showActions();
  poll();
  setInterval(poll, period);
})();
