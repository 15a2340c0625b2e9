// Quiver dashboard: a single page with hash routes (#/collections, #/points, #/search,
// #/snapshots, #/tasks, #/health). No framework, no build step, nothing fetched from elsewhere:
// every request goes to the server that served this file, with the API key (if the server
// asked for one) in the `api-key` header. The key lives in sessionStorage only.
"use strict";

(() => {
  const KEY_STORE = "quiver.apiKey";
  const FULL = "/"; // the snapshots page's "whole storage" choice (no collection has a slash)
  const $ = (sel, root = document) => root.querySelector(sel);

  // ---- DOM helpers: everything is built with createElement/textContent (no HTML strings) ----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k in el && typeof v !== "string") el[k] = v;
      else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  const SVG = "http://www.w3.org/2000/svg";
  function s(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
    return el;
  }

  function field(label, control, cls) {
    return h("div", { class: "field" + (cls ? " " + cls : "") },
      h("label", { for: control.id, text: label }), control);
  }

  function check(label, control) {
    return h("div", { class: "field check" }, control, h("label", { for: control.id, text: label }));
  }

  function table(caption, headers, rows, attrs) {
    return h("table", attrs || {},
      h("caption", { text: caption }),
      h("thead", {}, h("tr", {}, headers.map((x) => {
        const [text, cls] = Array.isArray(x) ? x : [x, undefined];
        return h("th", { scope: "col", class: cls, text });
      }))),
      h("tbody", {}, rows));
  }

  function kv(pairs) {
    return h("dl", { class: "kv" }, pairs.flatMap(([k, v]) =>
      [h("dt", { text: k }), h("dd", {}, v instanceof Node ? v : String(v ?? "—"))]));
  }

  const pretty = (v, label) => h("pre", { class: "json", tabindex: "0", role: "region", "aria-label": label || "JSON" }, JSON.stringify(v, null, 2));
  const pill = (text) => h("span", { class: "pill " + String(text).toLowerCase(), text });

  function say(message, kind) {
    const el = $("#status");
    el.replaceChildren(message ? h("span", { class: kind === "error" ? "error" : "", text: message }) : "");
  }

  function problem(where, err) {
    // an inline alert next to the control that failed, and the status line
    where.replaceChildren(h("p", { class: "error", role: "alert", text: String(err.message || err) }));
  }

  // ---- formatting ----

  function bytes(n) {
    if (n === null || n === undefined || Number.isNaN(n)) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = Number(n);
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[i];
  }

  function num(n) {
    if (n === null || n === undefined) return "—";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: 2 });
  }

  function secs(t) {
    if (t === null || t === undefined) return "—";
    if (t < 1) return (t * 1000).toFixed(0) + " ms";
    if (t < 120) return t.toFixed(1) + " s";
    if (t < 7200) return (t / 60).toFixed(1) + " min";
    return (t / 3600).toFixed(1) + " h";
  }

  function when(t) {
    if (!t) return "—";
    const d = typeof t === "number" ? new Date(t * 1000) : new Date(t.endsWith("Z") || t.includes("+") ? t : t + "Z");
    return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
  }

  function amount(task, which) {
    const v = task[`${task.unit}_${which}`];
    if (v === null || v === undefined) return "?";
    return task.unit === "bytes" ? bytes(v) : num(v) + " " + task.unit;
  }

  // ---- the API, with the key ----

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORE);
  function authHeaders() {
    const k = apiKey();
    return k ? { "api-key": k } : {};
  }

  let keyPrompt = null; // one dialog for all the calls refused at once
  function askKey(why) {
    if (keyPrompt) return keyPrompt;
    const dialog = $("#key-dialog");
    keyPrompt = new Promise((resolve) => {
      $("#key-why").textContent = why || "This server asks for an API key.";
      $("#key-input").value = "";
      dialog.returnValue = "";
      const done = () => {
        dialog.removeEventListener("close", done);
        const value = $("#key-input").value.trim();
        keyPrompt = null;
        if (dialog.returnValue === "ok" && value) {
          sessionStorage.setItem(KEY_STORE, value);
          showKeyState();
          resolve(true);
        } else {
          resolve(false);
        }
      };
      dialog.addEventListener("close", done);
      dialog.showModal();
      $("#key-input").focus();
    });
    return keyPrompt;
  }

  async function refusal(status, text) {
    const msg = status === 401
      ? (apiKey() ? "The server refused this key: " : "This server asks for an API key: ") + text
      : "This key may not do that (" + text + "). Enter a key with more access, or cancel.";
    return askKey(msg);
  }

  async function errorText(resp) {
    const text = await resp.text();
    try {
      const doc = JSON.parse(text);
      return (doc.status && doc.status.error) || text;
    } catch (e) {
      return text || resp.statusText;
    }
  }

  // fetch with the key; asks for one on 401/403 and tries again. `raw`: the Response itself.
  async function api(method, path, body, raw) {
    for (;;) {
      const sent = apiKey();
      const init = { method, headers: authHeaders() };
      if (body !== undefined) {
        init.headers["content-type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      const resp = await fetch(path, init);
      if (resp.status === 401 || resp.status === 403) {
        const text = await errorText(resp);
        // a call sent with an older key (another call's prompt set a new one meanwhile, as
        // when a page's calls run side by side) tries the new key before asking again
        if (apiKey() !== sent) continue;
        if (await refusal(resp.status, text)) continue;
        throw new ApiError(resp.status, text);
      }
      if (!resp.ok) throw new ApiError(resp.status, await errorText(resp));
      if (raw) return resp;
      const doc = await resp.json();
      return doc.result;
    }
  }

  const enc = encodeURIComponent;
  const collections = async () =>
    (await api("GET", "/collections")).collections.map((c) => c.name).sort();

  async function followTask(id, onUpdate, signal) {
    for (;;) {
      const task = await api("GET", `/tasks/${enc(id)}`);
      onUpdate(task);
      if (task.outcome !== "running" || (signal && signal.stopped)) return task;
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  function taskProgress(label, id) {
    const bar = h("progress", { id, max: 1, value: 0, "aria-label": label });
    const text = h("span", { class: "muted" });
    const row = h("div", { class: "progress-row" }, h("span", { text: label }), bar, text);
    row.update = (task) => {
      if (task.progress !== null && task.progress !== undefined) bar.value = task.progress;
      else bar.removeAttribute("value"); // indeterminate: the total is not known
      const pct = task.progress !== null && task.progress !== undefined ? ` (${(task.progress * 100).toFixed(0)}%)` : "";
      text.textContent = `${task.phase || ""} ${amount(task, "done")} of ${amount(task, "total")}${pct} — ${task.outcome}`;
      if (task.outcome !== "running") bar.value = task.outcome === "ok" ? 1 : bar.value || 0;
    };
    return row;
  }

  // ---- collection picker, shared by several pages ----

  let lastCollection = null;

  async function picker(params, id, extra) {
    const names = await collections();
    const select = h("select", { id, name: "collection" });
    if (extra) select.append(h("option", { value: extra[0], text: extra[1] }));
    for (const n of names) select.append(h("option", { value: n, text: n }));
    const wanted = params.get("c") ?? lastCollection;
    if (wanted !== null && [...select.options].some((o) => o.value === wanted)) select.value = wanted;
    lastCollection = select.value || null;
    select.addEventListener("change", () => { lastCollection = select.value; });
    return { select, names };
  }

  function parseJson(text, what) {
    if (!text.trim()) return undefined;
    try { return JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON: ${e.message}`); }
  }

  function pointId(text) {
    const t = text.trim();
    return /^\d+$/.test(t) ? Number(t) : t;
  }

  function vectorSummary(config) {
    const v = config.params.vectors;
    const one = (x) => `${x.size}-d ${x.distance}${x.on_disk ? ", on disk" : ""}`;
    if (v && typeof v.size === "number") return one(v);
    const named = Object.entries(v || {}).map(([k, x]) => `${k}: ${one(x)}`);
    const sparse = Object.keys(config.params.sparse_vectors || {}).map((k) => `${k}: sparse`);
    return named.concat(sparse).join("; ") || "—";
  }

  function vectorNames(config) {
    const v = config.params.vectors;
    const dense = v && typeof v.size === "number" ? [] : Object.keys(v || {});
    return dense.concat(Object.keys(config.params.sparse_vectors || {}));
  }

  // ---- pages ----

  async function pageCollections(main, params) {
    main.append(h("h1", { text: "Collections" }));
    const [names, telemetry] = await Promise.all([
      collections(),
      api("GET", "/telemetry").catch(() => null), // a key scoped to collections may not read it
    ]);
    const infos = await Promise.all(names.map((n) => api("GET", `/collections/${enc(n)}`)));
    const q = telemetry && telemetry.quiver;
    const where = new Map(((q && q.collections) || []).map((c) => [c.id, c]));
    if (q) {
      main.append(h("div", { class: "cards" },
        h("section", { class: "card", "aria-label": "Server" }, kv([
          ["Collections", names.length], ["Device", q.device], ["Index builds", num(q.index_builds)],
          ["Uptime", secs(q.uptime_s)], ["Qdrant API", q.qdrant_api_version]]))));
    }
    if (!names.length) {
      main.append(h("p", { text: "No collections yet. Create one with PUT /collections/{name}, or recover one from a snapshot on the Snapshots page." }));
      return;
    }
    const rows = names.map((n, i) => {
      const info = infos[i];
      const t = where.get(n) || {};
      return h("tr", { class: params.get("c") === n ? "selected" : "" },
        h("th", { scope: "row" }, h("a", { href: `#/collections?c=${enc(n)}`, text: n })),
        h("td", {}, pill(info.status)),
        h("td", { class: "num", text: num(info.points_count) }),
        h("td", { class: "num", text: num(info.segments_count) }),
        h("td", { class: "num", text: num(info.indexed_vectors_count) }),
        h("td", { text: vectorSummary(info.config) }),
        h("td", { text: t.device ?? "—" }),
        h("td", { class: "num", text: t.segments_on_device ?? "—" }),
        h("td", { class: "num", text: t.segments_on_host ?? "—" }));
    });
    main.append(table("All collections", ["Name", "Status", ["Points", "num"], ["Segments", "num"],
      ["Indexed vectors", "num"], "Vectors", "Device", ["Segments on device", "num"],
      ["Segments on host", "num"]], rows, { id: "collections-table" }));

    const name = params.get("c");
    if (!name || !names.includes(name)) return;
    lastCollection = name;
    const info = infos[names.indexOf(name)];
    const t = where.get(name) || {};
    const hnsw = info.config.hnsw_config || {};
    const section = h("section", { "aria-labelledby": "detail-title", id: "collection-detail" },
      h("h2", { id: "detail-title", text: `Collection ${name}` }),
      h("p", {},
        h("a", { href: `#/points?c=${enc(name)}`, text: "Browse points" }), " · ",
        h("a", { href: `#/search?c=${enc(name)}`, text: "Search" }), " · ",
        h("a", { href: `#/snapshots?c=${enc(name)}`, text: "Snapshots" })),
      h("div", { class: "cards" },
        h("section", { class: "card", "aria-labelledby": "h-overview" },
          h("h3", { id: "h-overview", text: "Overview" }),
          kv([["Status", pill(info.status)], ["Optimizer", info.optimizer_status],
            ["Points", num(info.points_count)], ["Segments", num(info.segments_count)],
            ["Vectors", vectorSummary(info.config)]])),
        h("section", { class: "card", "aria-labelledby": "h-device" },
          h("h3", { id: "h-device", text: "Device residency" }),
          kv([["Device", t.device ?? "—"], ["Segments on device", t.segments_on_device ?? "—"],
            ["Segments on host", t.segments_on_host ?? "—"],
            ["Fallback", t.fallback_reason ?? "none"]])),
        h("section", { class: "card", "aria-labelledby": "h-index" },
          h("h3", { id: "h-index", text: "Index status" }),
          kv([["State", info.status === "yellow" ? "indexing" : "up to date"],
            ["Indexed vectors", num(info.indexed_vectors_count)],
            ["HNSW m", hnsw.m], ["HNSW ef_construct", hnsw.ef_construct],
            ["Full-scan threshold", hnsw.full_scan_threshold]]))));
    const schema = Object.entries(info.payload_schema || {});
    section.append(h("h3", { text: "Payload schema" }));
    section.append(schema.length
      ? table("Indexed payload fields", ["Field", "Type", ["Points", "num"], "Parameters"], schema.map(([f, e]) =>
        h("tr", {}, h("th", { scope: "row" }, h("code", { text: f })), h("td", { text: e.data_type }),
          h("td", { class: "num", text: num(e.points) }),
          h("td", {}, e.params ? h("code", { text: JSON.stringify(e.params) }) : "—"))), { id: "schema-table" })
      : h("p", { class: "muted", text: "No payload indexes." }));
    section.append(h("h3", { text: "Configuration" }), pretty(info.config, `Configuration of ${name}`));
    main.append(section);
  }

  async function pagePoints(main, params) {
    main.append(h("h1", { text: "Points" }));
    const { select, names } = await picker(params, "points-collection");
    if (!names.length) { main.append(h("p", { text: "No collections yet." })); return; }
    const filter = h("textarea", { id: "points-filter", rows: 3, placeholder: '{"must": [{"key": "city", "match": {"value": "Paris"}}]}' });
    const limit = h("input", { id: "points-limit", type: "number", min: 1, max: 1000, value: "20" });
    const vectors = h("input", { id: "points-vectors", type: "checkbox" });
    const out = h("div", { id: "points-out" });
    const detail = h("section", { id: "point-detail", "aria-live": "polite" });
    let offsets = [null]; // the offsets of the pages seen, for "previous"

    async function load(page) {
      let body;
      try {
        body = { limit: Number(limit.value) || 20, with_payload: true, with_vector: vectors.checked };
        const f = parseJson(filter.value, "The filter");
        if (f !== undefined) body.filter = f;
        if (offsets[page] !== null) body.offset = offsets[page];
        const res = await api("POST", `/collections/${enc(select.value)}/points/scroll`, body);
        offsets = offsets.slice(0, page + 1);
        if (res.next_page_offset !== null && res.next_page_offset !== undefined) offsets.push(res.next_page_offset);
        render(res.points, page);
      } catch (e) { problem(out, e); }
    }

    function render(points, page) {
      const rows = points.map((p) => h("tr", {},
        h("td", {}, h("code", { text: String(p.id) })),
        h("td", {}, h("span", { class: "payload mono", text: JSON.stringify(p.payload ?? {}) })),
        vectors.checked ? h("td", {}, h("span", { class: "payload mono", text: JSON.stringify(p.vector) })) : null,
        h("td", {}, h("button", { type: "button", text: "View", "aria-label": `View point ${p.id}`, onclick: () => view(p.id) }))));
      const headers = ["ID", "Payload"].concat(vectors.checked ? ["Vectors"] : [], ["Actions"]);
      out.replaceChildren(
        table(`Page ${page + 1}: ${points.length} points`, headers, rows, { id: "points-table" }),
        h("div", { class: "bar" },
          h("button", { type: "button", text: "Previous page", disabled: page === 0, onclick: () => load(page - 1) }),
          h("button", { type: "button", id: "points-next", text: "Next page", disabled: offsets.length <= page + 1, onclick: () => load(page + 1) })));
    }

    async function view(id) {
      try {
        const p = await api("GET", `/collections/${enc(select.value)}/points/${enc(String(id))}`);
        detail.replaceChildren(h("h2", { id: "point-title", text: `Point ${p.id}`, tabindex: -1 }),
          h("h3", { text: "Payload" }), pretty(p.payload ?? {}, `Payload of point ${p.id}`),
          h("h3", { text: "Vectors" }), pretty(p.vector ?? null, `Vectors of point ${p.id}`));
        $("#point-title").focus();
      } catch (e) { problem(detail, e); }
    }

    main.append(h("form", { class: "bar", id: "points-form", onsubmit: (e) => { e.preventDefault(); offsets = [null]; detail.replaceChildren(); load(0); } },
      field("Collection", select), field("Filter (JSON, optional)", filter, "wide"),
      field("Page size", limit), check("With vectors", vectors),
      h("button", { type: "submit", class: "primary", text: "Scroll" })), out, detail);
    select.addEventListener("change", () => { offsets = [null]; detail.replaceChildren(); load(0); });
    await load(0);
  }

  async function pageSearch(main, params) {
    main.append(h("h1", { text: "Search" }));
    const { select, names } = await picker(params, "search-collection");
    if (!names.length) { main.append(h("p", { text: "No collections yet." })); return; }
    const byVector = h("input", { type: "radio", name: "mode", id: "mode-vector", value: "vector", checked: true });
    const byId = h("input", { type: "radio", name: "mode", id: "mode-id", value: "id" });
    const vector = h("textarea", { id: "search-vector", rows: 3, placeholder: "[0.1, 0.2, 0.3, ...]  or  {\"indices\": [1, 5], \"values\": [0.5, 0.2]}" });
    const pid = h("input", { id: "search-id", type: "text", placeholder: "42 or a UUID" });
    const using = h("select", { id: "search-using" });
    const filter = h("textarea", { id: "search-filter", rows: 2, placeholder: '{"must": [...]}' });
    const limit = h("input", { id: "search-limit", type: "number", min: 1, max: 1000, value: "10" });
    const threshold = h("input", { id: "search-threshold", type: "number", step: "any" });
    const ef = h("input", { id: "search-ef", type: "number", min: 1 });
    const exact = h("input", { id: "search-exact", type: "checkbox" });
    const out = h("div", { id: "search-out", "aria-live": "polite" });

    async function loadUsing() {
      const info = await api("GET", `/collections/${enc(select.value)}`);
      using.replaceChildren(h("option", { value: "", text: "(default)" }),
        vectorNames(info.config).map((n) => h("option", { value: n, text: n })));
    }

    async function run() {
      try {
        const body = { limit: Number(limit.value) || 10, with_payload: true };
        if (byVector.checked) {
          const v = parseJson(vector.value, "The vector");
          if (v === undefined) throw new Error("Enter a query vector.");
          body.query = v;
        } else {
          if (!pid.value.trim()) throw new Error("Enter a point id.");
          body.query = pointId(pid.value);
        }
        if (using.value) body.using = using.value;
        const f = parseJson(filter.value, "The filter");
        if (f !== undefined) body.filter = f;
        if (threshold.value !== "") body.score_threshold = Number(threshold.value);
        const p = {};
        if (ef.value) p.hnsw_ef = Number(ef.value);
        if (exact.checked) p.exact = true;
        if (Object.keys(p).length) body.params = p;
        const started = performance.now();
        const res = await api("POST", `/collections/${enc(select.value)}/points/query`, body);
        const ms = performance.now() - started;
        const rows = res.points.map((pt, i) => h("tr", {},
          h("td", { class: "num", text: i + 1 }),
          h("td", {}, h("code", { text: String(pt.id) })),
          h("td", { class: "num score", "data-score": String(pt.score), text: String(pt.score) }),
          h("td", {}, h("span", { class: "payload mono", text: JSON.stringify(pt.payload ?? {}) }))));
        out.replaceChildren(table(`${res.points.length} results in ${ms.toFixed(0)} ms`,
          [["Rank", "num"], "ID", ["Score", "num"], "Payload"], rows, { id: "search-table" }));
      } catch (e) { problem(out, e); }
    }

    const mode = h("fieldset", { class: "field" }, h("legend", { text: "Query by" }),
      h("div", { class: "bar" }, check("Vector", byVector), check("Point id", byId)));
    main.append(h("form", { id: "search-form", onsubmit: (e) => { e.preventDefault(); run(); } },
      h("div", { class: "bar" }, field("Collection", select), field("Vector name", using), mode),
      h("div", { class: "bar" }, field("Query vector (JSON)", vector, "wide"), field("Point id", pid)),
      h("div", { class: "bar" }, field("Filter (JSON, optional)", filter, "wide")),
      h("div", { class: "bar" }, field("Limit", limit), field("Score threshold", threshold),
        field("hnsw_ef", ef), check("Exact (no index)", exact),
        h("button", { type: "submit", class: "primary", text: "Search" }))), out);
    select.addEventListener("change", loadUsing);
    byId.addEventListener("change", () => pid.focus());
    byVector.addEventListener("change", () => vector.focus());
    pid.addEventListener("input", () => { byId.checked = true; });
    vector.addEventListener("input", () => { byVector.checked = true; });
    await loadUsing();
  }

  async function download(url, name) {
    // with a key the browser cannot follow a plain link (no header): fetch it, save the blob
    const resp = await api("GET", url, undefined, true);
    const blob = await resp.blob();
    const href = URL.createObjectURL(blob);
    const a = h("a", { href, download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10000);
  }

  function confirmDialog(text, yes) {
    const dialog = $("#confirm-dialog");
    $("#confirm-text").textContent = text;
    $("#confirm-yes").textContent = yes;
    dialog.returnValue = "";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
      dialog.showModal();
      $("#confirm-no").focus();
    });
  }

  async function pageSnapshots(main, params) {
    main.append(h("h1", { text: "Snapshots" }));
    const { select } = await picker(params, "snap-collection", [FULL, "Whole storage (full snapshots)"]);
    if (params.get("c") === null && lastCollection === null && select.options.length > 1) {
      select.selectedIndex = 1;
      lastCollection = select.value;
    }
    const listing = h("div", { id: "snap-list" });
    const createOut = h("div", { id: "snap-create-out" });
    const base = () => select.value === FULL ? "/snapshots" : `/collections/${enc(select.value)}/snapshots`;

    async function refresh() {
      try {
        const snaps = await api("GET", base());
        snaps.sort((a, b) => String(b.creation_time).localeCompare(String(a.creation_time)));
        const rows = snaps.map((sn) => h("tr", { "data-name": sn.name },
          h("th", { scope: "row" }, h("code", { text: sn.name })),
          h("td", { class: "num size", "data-bytes": sn.size, title: `${sn.size} bytes`, text: bytes(sn.size) }),
          h("td", {}, h("code", { class: "checksum", text: sn.checksum ?? "—" })),
          h("td", { text: when(sn.creation_time) }),
          h("td", {},
            h("a", { class: "button", href: `${base()}/${enc(sn.name)}`, download: sn.name, text: "Download",
              "aria-label": `Download ${sn.name}`,
              onclick: (e) => { if (apiKey()) { e.preventDefault(); download(`${base()}/${enc(sn.name)}`, sn.name).catch((err) => say(err.message, "error")); } } }),
            " ",
            h("button", { type: "button", class: "danger", text: "Delete", "aria-label": `Delete ${sn.name}`, onclick: () => remove(sn.name) }))));
        listing.replaceChildren(snaps.length
          ? table(`${snaps.length} snapshot${snaps.length === 1 ? "" : "s"}`, ["Name", ["Size", "num"], "SHA-256", "Created", "Actions"], rows, { id: "snap-table" })
          : h("p", { class: "muted", id: "snap-none", text: "No snapshots." }));
        recoverPanel.hidden = select.value === FULL;
      } catch (e) { problem(listing, e); }
    }

    async function remove(name) {
      const what = select.value === FULL ? "the full snapshot" : `collection ${select.value}'s snapshot`;
      if (!(await confirmDialog(`Delete ${what} ${name}? This cannot be undone.`, "Delete"))) {
        say("Nothing deleted.");
        return;
      }
      try {
        await api("DELETE", `${base()}/${enc(name)}?wait=true`);
        say(`Deleted ${name}.`);
      } catch (e) { say(e.message, "error"); }
      await refresh();
    }

    async function follow(resp, out, label, id) {
      // read the (small) body: a response left unread stays in flight, and a reload aborts it
      await resp.arrayBuffer();
      const task = resp.headers.get("x-quiver-task");
      if (!task) return null;
      const bar = taskProgress(label, id);
      out.append(bar);
      return followTask(task, bar.update);
    }

    async function create() {
      createBtn.disabled = true;
      createOut.replaceChildren();
      try {
        const resp = await api("POST", `${base()}?wait=false`, undefined, true);
        const task = await follow(resp, createOut, "Creating snapshot", "snap-create-progress");
        if (task && task.outcome !== "ok") throw new Error(`Snapshot ${task.outcome}: ${task.error || ""}`);
        createOut.append(h("p", { class: "okmsg", text: "Snapshot created." }));
      } catch (e) { createOut.append(h("p", { class: "error", role: "alert", text: e.message })); }
      createBtn.disabled = false;
      await refresh();
    }

    const createBtn = h("button", { type: "button", class: "primary", id: "snap-create", text: "Create snapshot", onclick: create });

    // upload and recover: XMLHttpRequest, for its upload progress events
    const file = h("input", { id: "upload-file", type: "file", accept: ".snapshot,application/octet-stream" });
    const into = h("input", { id: "upload-into", type: "text", autocomplete: "off" });
    const upSum = h("input", { id: "upload-checksum", type: "text", autocomplete: "off", placeholder: "optional", size: 40 });
    const upBar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
    const upText = h("span", { class: "muted", id: "upload-text", text: "Nothing uploaded yet." });
    const upOut = h("div", { id: "upload-out" });

    function send(target, f, checksum) {
      return new Promise((resolve, reject) => {
        const xhr = new XMLHttpRequest();
        let url = `/collections/${enc(target)}/snapshots/upload?wait=false`;
        if (checksum) url += `&checksum=${enc(checksum)}`;
        xhr.open("POST", url);
        for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
        xhr.upload.addEventListener("progress", (e) => {
          if (!e.lengthComputable) return;
          upBar.max = e.total;
          upBar.value = e.loaded;
          upText.textContent = `${bytes(e.loaded)} of ${bytes(e.total)} (${(100 * e.loaded / e.total).toFixed(0)}%)`;
        });
        xhr.addEventListener("load", () => resolve(xhr));
        xhr.addEventListener("error", () => reject(new Error("The upload failed (network error).")));
        xhr.addEventListener("abort", () => reject(new Error("The upload was aborted.")));
        const form = new FormData();
        form.append("snapshot", f, f.name);
        xhr.send(form);
      });
    }

    async function upload(e) {
      e.preventDefault();
      upOut.replaceChildren();
      const f = file.files[0];
      const target = into.value.trim();
      if (!f || !target) { problem(upOut, new Error("Choose a snapshot file and the collection to recover into.")); return; }
      upBtn.disabled = true;
      try {
        let xhr;
        for (;;) {
          upBar.value = 0;
          const sent = apiKey();
          xhr = await send(target, f, upSum.value.trim());
          if ((xhr.status === 401 || xhr.status === 403)
              && (apiKey() !== sent || await refusal(xhr.status, xhr.responseText))) continue;
          break;
        }
        if (xhr.status >= 400) {
          let msg = xhr.responseText;
          try { msg = JSON.parse(msg).status.error || msg; } catch (err) { /* plain text */ }
          throw new Error(`Upload refused (${xhr.status}): ${msg}`);
        }
        upText.textContent = `Uploaded ${bytes(f.size)}; recovering…`;
        const id = xhr.getResponseHeader("x-quiver-task");
        if (id) {
          const bar = taskProgress("Recovery", "recover-progress");
          upOut.append(bar);
          const task = await followTask(id, bar.update);
          if (task.outcome !== "ok") throw new Error(`Recovery ${task.outcome}: ${task.error || ""}`);
        }
        upText.textContent = `Uploaded ${bytes(f.size)}.`;
        upOut.append(h("p", { class: "okmsg", id: "upload-done", text: `Recovered collection ${target} from ${f.name}.` }));
        lastCollection = target;
      } catch (err) { upOut.append(h("p", { class: "error", role: "alert", text: err.message })); }
      upBtn.disabled = false;
      await refresh();
    }
    const upBtn = h("button", { type: "submit", class: "primary", id: "upload-go", text: "Upload and recover" });

    const url = h("input", { id: "url-location", type: "url", placeholder: "https://host/path/name.snapshot", size: 50 });
    const urlInto = h("input", { id: "url-into", type: "text", autocomplete: "off" });
    const urlSum = h("input", { id: "url-checksum", type: "text", autocomplete: "off", placeholder: "optional", size: 40 });
    const urlOut = h("div", { id: "url-out" });
    async function fromUrl(e) {
      e.preventDefault();
      urlOut.replaceChildren();
      const target = urlInto.value.trim();
      try {
        if (!url.value.trim() || !target) throw new Error("Enter the snapshot's URL and the collection to recover into.");
        const body = { location: url.value.trim() };
        if (urlSum.value.trim()) body.checksum = urlSum.value.trim();
        const resp = await api("PUT", `/collections/${enc(target)}/snapshots/recover?wait=false`, body, true);
        const task = await follow(resp, urlOut, "Recovery", "url-progress");
        if (task && task.outcome !== "ok") throw new Error(`Recovery ${task.outcome}: ${task.error || ""}`);
        urlOut.append(h("p", { class: "okmsg", text: `Recovered collection ${target}.` }));
      } catch (err) { urlOut.append(h("p", { class: "error", role: "alert", text: err.message })); }
      await refresh();
    }

    const recoverPanel = h("section", { "aria-labelledby": "h-recover" },
      h("h2", { id: "h-recover", text: "Recover a collection" }),
      h("form", { id: "upload-form", onsubmit: upload },
        h("h3", { text: "Upload a snapshot file" }),
        h("div", { class: "bar" }, field("Snapshot file", file), field("Into collection", into),
          field("SHA-256 checksum", upSum), upBtn),
        h("div", { class: "progress-row" }, h("span", { text: "Upload" }), upBar, upText), upOut),
      h("form", { id: "url-form", onsubmit: fromUrl },
        h("h3", { text: "Recover from a URL" }),
        h("div", { class: "bar" }, field("Snapshot URL", url, "wide"), field("Into collection", urlInto),
          field("SHA-256 checksum", urlSum),
          h("button", { type: "submit", class: "primary", text: "Recover from URL" })), urlOut));

    const syncTargets = () => {
      if (select.value !== FULL) { into.value = select.value; urlInto.value = select.value; }
    };
    select.addEventListener("change", () => { syncTargets(); refresh(); });
    syncTargets();
    main.append(h("div", { class: "bar" }, field("Snapshots of", select), createBtn), createOut,
      listing, recoverPanel);
    await refresh();
  }

  async function pageTasks(main, params, life) {
    main.append(h("h1", { text: "Tasks" }));
    const running = h("input", { id: "tasks-running", type: "checkbox", checked: params.get("running") === "true" });
    const out = h("div", { id: "tasks-out" });
    main.append(h("p", { class: "muted", text: "Long operations: snapshot creation and recovery, transfers, index builds. Refreshed every second." }),
      h("div", { class: "bar" }, check("Running only", running)), out);
    let shown = "";

    async function cancel(id) {
      if (!(await confirmDialog(`Cancel task ${id}? Its work stops and is cleaned up.`, "Cancel task"))) return;
      try {
        const t = await api("DELETE", `/tasks/${enc(id)}?wait=true&timeout=10`);
        // a 200 means the stop was asked for; the task's outcome says what happened
        if (t.cancel === "done" || t.outcome === "cancelled") say(`Task ${id} cancelled.`);
        else if (t.cancel === "too_late") say(`Task ${id} ended (${t.outcome}) before it could stop.`);
        else say(`Task ${id}: cancellation requested; still stopping.`);
      } catch (e) { say(e.message, "error"); }
      tick();
    }

    async function tick() {
      try {
        const list = await api("GET", "/tasks" + (running.checked ? "?running=true" : ""));
        list.reverse(); // newest first
        const key = JSON.stringify(list);
        if (key === shown) return;
        shown = key;
        const focused = document.activeElement && document.activeElement.id;
        const rows = list.map((t) => {
          const bar = h("progress", { max: 1, "aria-label": `Progress of task ${t.id}` });
          if (t.progress !== null) bar.value = t.progress;
          return h("tr", { "data-task": t.id, "data-kind": t.kind },
            h("td", {}, h("code", { text: t.id })),
            h("td", { text: t.kind }),
            h("td", { text: t.collection ?? "—" }),
            h("td", { text: t.phase ?? "—" }),
            h("td", {}, bar, " ", t.progress === null ? "" : `${(t.progress * 100).toFixed(0)}%`),
            h("td", { class: "num", text: `${amount(t, "done")} / ${amount(t, "total")}` }),
            h("td", { class: "num", text: t.unit === "bytes" ? bytes(t.rate_per_s) + "/s" : num(t.rate_per_s) + "/s" }),
            h("td", { class: "num", text: secs(t.eta_s) }),
            h("td", { class: "num", text: secs(t.elapsed_s) }),
            h("td", {}, pill(t.outcome), t.error ? h("div", { class: "error", text: t.error }) : null),
            h("td", {}, t.cancellable && t.outcome === "running"
              ? h("button", { type: "button", id: `cancel-${t.id}`, text: "Cancel", "aria-label": `Cancel task ${t.id}`, onclick: () => cancel(t.id) })
              : ""));
        });
        out.replaceChildren(list.length
          ? h("div", { class: "scroll-x" }, table(`${list.length} task${list.length === 1 ? "" : "s"}, newest first`, ["Task", "Kind", "Collection", "Phase", "Progress",
            ["Done / total", "num"], ["Rate", "num"], ["ETA", "num"], ["Elapsed", "num"], "Outcome", "Actions"], rows, { id: "tasks-table" }))
          : h("p", { class: "muted", id: "tasks-none", text: "No tasks." }));
        if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
      } catch (e) { problem(out, e); }
    }

    running.addEventListener("change", () => { shown = ""; tick(); });
    await tick();
    life.every(1000, tick);
  }

  // /metrics: Prometheus text, parsed here. Samples are kept while the page is open.
  function parseMetrics(text) {
    const out = [];
    for (const line of text.split("\n")) {
      if (!line || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
      out.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return out;
  }

  const sum = (samples, name, pred) =>
    samples.filter((x) => x.name === name && (!pred || pred(x.labels))).reduce((a, x) => a + x.value, 0);

  const history = []; // {t, requests, errors, deviceUsed, deviceLimit, rss, tasks, routes}
  const HISTORY = 90;

  function chart(title, id, points, fmt, limit) {
    const w = 300;
    const hgt = 80;
    const values = points.map((p) => p[1]).filter((v) => v !== null);
    const top = Math.max(limit || 0, ...values, 1e-9);
    const svg = s("svg", { viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img" });
    const now = values.length ? values[values.length - 1] : null;
    svg.setAttribute("aria-label", `${title}: now ${now === null ? "no data" : fmt(now)}, highest ${values.length ? fmt(Math.max(...values)) : "no data"} over the last ${points.length} samples`);
    if (points.length > 1) {
      const t0 = points[0][0];
      const span = Math.max(points[points.length - 1][0] - t0, 1e-9);
      const xy = points.filter((p) => p[1] !== null)
        .map((p) => `${((p[0] - t0) / span * w).toFixed(1)},${(hgt - 2 - (p[1] / top) * (hgt - 6)).toFixed(1)}`);
      if (xy.length > 1) {
        svg.append(s("polygon", { points: `${xy[0].split(",")[0]},${hgt} ${xy.join(" ")} ${xy[xy.length - 1].split(",")[0]},${hgt}` }));
        svg.append(s("polyline", { points: xy.join(" ") }));
      }
    }
    if (limit) {
      const y = (hgt - 2 - (limit / top) * (hgt - 6)).toFixed(1);
      svg.append(s("line", { class: "limit", x1: 0, x2: w, y1: y, y2: y }));
    }
    return h("section", { class: "card chart", id, "aria-labelledby": `${id}-t` },
      h("h3", { id: `${id}-t`, text: title }),
      h("div", { class: "now", text: now === null ? "—" : fmt(now) }),
      limit ? h("div", { class: "muted", text: `limit ${fmt(limit)}` }) : null, svg);
  }

  async function pageHealth(main, params, life) {
    main.append(h("h1", { text: "Server health" }));
    const info = h("div", { class: "cards", id: "health-info" });
    const charts = h("div", { class: "charts", id: "health-charts" });
    const routes = h("div", { id: "health-routes" });
    main.append(info, h("h2", { text: "Last few minutes" }), charts, h("h2", { text: "Requests by route" }), routes);

    async function about() {
      const [ready, tel] = await Promise.all([
        fetch("/readyz").then((r) => r.text()).catch(() => "unreachable"),
        api("GET", "/telemetry").catch(() => null)]);
      const q = (tel && tel.quiver) || {};
      info.replaceChildren(h("section", { class: "card", "aria-label": "Server" }, kv([
        ["Ready", ready], ["Version", tel ? tel.app.version : "—"], ["Commit", (q.commit || "").slice(0, 12) || "—"],
        ["Uptime", secs(q.uptime_s)], ["Device", q.device ?? "—"], ["Collections", tel ? tel.collections.number_of_collections : "—"]])));
    }

    async function tick() {
      try {
        const text = await (await api("GET", "/metrics", undefined, true)).text();
        const m = parseMetrics(text);
        const routeCounts = {};
        for (const x of m) {
          if (x.name !== "quiver_http_requests_total") continue;
          const k = `${x.labels.method} ${x.labels.route}`;
          routeCounts[k] = (routeCounts[k] || 0) + x.value;
        }
        history.push({
          t: performance.now() / 1000,
          requests: sum(m, "quiver_http_requests_total"),
          errors: sum(m, "quiver_http_requests_total", (l) => Number(l.status) >= 500),
          deviceUsed: sum(m, "quiver_device_memory_used_bytes"),
          deviceLimit: sum(m, "quiver_device_memory_limit_bytes"),
          rss: sum(m, "process_resident_memory_bytes"),
          tasks: sum(m, "quiver_tasks_running"),
          routes: routeCounts,
        });
        if (history.length > HISTORY) history.shift();
        draw();
      } catch (e) { problem(charts, e); }
    }

    function rate(field) {
      return history.map((x, i) => {
        if (i === 0) return [x.t, null];
        const prev = history[i - 1];
        const v = x[field] - prev[field];
        return [x.t, v < 0 ? null : v / Math.max(x.t - prev.t, 1e-3)];
      });
    }

    function draw() {
      const last = history[history.length - 1];
      const perS = (v) => `${v.toFixed(v < 10 ? 2 : 0)}/s`;
      charts.replaceChildren(
        chart("Requests per second", "chart-requests", rate("requests"), perS),
        chart("Server errors (5xx) per second", "chart-errors", rate("errors"), perS),
        chart("Device (GPU) memory used", "chart-device", history.map((x) => [x.t, x.deviceUsed]), bytes, last.deviceLimit || undefined),
        chart("Resident memory (RSS)", "chart-rss", history.map((x) => [x.t, x.rss]), bytes),
        chart("Running tasks", "chart-tasks", history.map((x) => [x.t, x.tasks]), (v) => num(v)));
      if (!last.deviceLimit) {
        $("#chart-device").append(h("p", { class: "muted", text: "No device: collections are served from host memory." }));
      }
      const prev = history.length > 1 ? history[history.length - 2] : null;
      const dt = prev ? Math.max(last.t - prev.t, 1e-3) : null;
      const top = Object.entries(last.routes).sort((a, b) => b[1] - a[1]).slice(0, 12);
      routes.replaceChildren(table("Busiest routes since the server started", ["Route", ["Requests", "num"], ["Now, per second", "num"]],
        top.map(([k, v]) => h("tr", {}, h("td", {}, h("code", { text: k })), h("td", { class: "num", text: num(v) }),
          h("td", { class: "num", text: prev ? (Math.max(v - (prev.routes[k] || 0), 0) / dt).toFixed(2) : "—" }))), { id: "routes-table" }));
    }

    await Promise.all([about(), tick()]);
    life.every(2000, tick);
    life.every(10000, about);
  }

  // ---- router ----

  const PAGES = {
    collections: pageCollections, points: pagePoints, search: pageSearch,
    snapshots: pageSnapshots, tasks: pageTasks, health: pageHealth,
  };
  const TITLES = {
    collections: "Collections", points: "Points", search: "Search", snapshots: "Snapshots",
    tasks: "Tasks", health: "Health",
  };

  let life = null; // the current page's timers, stopped when the page changes

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const page = PAGES[path] ? path : "collections";
    return { page, params: new URLSearchParams(query || "") };
  }

  async function route(first) {
    if (life) life.stop();
    const current = { timers: [], stopped: false };
    current.every = (ms, fn) => {
      if (!current.stopped) current.timers.push(setInterval(() => { if (!current.stopped) fn(); }, ms));
    };
    current.stop = () => { current.stopped = true; current.timers.forEach(clearInterval); };
    life = current;
    const { page, params } = parseHash();
    for (const a of document.querySelectorAll("nav a[data-page]")) {
      if (a.dataset.page === page) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    document.title = `${TITLES[page]} · Quiver dashboard`;
    const main = $("#main");
    const fresh = h("div", { id: `page-${page}`, "aria-busy": "true" });
    main.replaceChildren(fresh);
    say("");
    try {
      await PAGES[page](fresh, params, current);
    } catch (e) {
      if (current.stopped) return;
      fresh.append(h("p", { class: "error", role: "alert", text: `Could not load this page: ${e.message}` }),
        h("button", { type: "button", text: "Try again", onclick: () => route(false) }));
    }
    if (current.stopped) return;
    fresh.setAttribute("aria-busy", "false");
    main.dataset.ready = page; // tests and screen readers: the page has rendered
    if (!first) {
      const heading = main.querySelector("h1");
      if (heading) { heading.tabIndex = -1; heading.focus(); }
    }
  }

  function showKeyState() {
    const has = !!apiKey();
    $("#key-label").textContent = has ? "API key set (this tab)" : "No API key";
    $("#key-change").textContent = has ? "Change key" : "Set key";
    $("#key-forget").hidden = !has;
  }

  function init() {
    $("#key-cancel").addEventListener("click", () => $("#key-dialog").close("cancel"));
    $("#key-form").addEventListener("submit", (e) => {
      e.preventDefault();
      $("#key-dialog").close("ok");
    });
    $("#key-change").addEventListener("click", async () => {
      if (await askKey("Enter the API key to send with every request.")) route(false);
    });
    $("#key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY_STORE);
      showKeyState();
      say("The key is forgotten.");
    });
    $("#skip-link").addEventListener("click", (e) => { e.preventDefault(); $("#main").focus(); });
    window.addEventListener("hashchange", () => route(false));
    showKeyState();
    route(true);
  }

  init();
})();
