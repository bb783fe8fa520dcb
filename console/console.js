// The Switchboard console: the overview at / and an endpoint page at /console/endpoint/NAME, both
// fed live by /console/feed (Server-Sent Events). Plain JavaScript, no build step, no framework:
// elements are made with h(), text always goes in as text.
"use strict";

(() => {
  const app = document.getElementById("app");
  const feedStatus = document.getElementById("feed-status");
  const route = location.pathname.match(/^\/console\/endpoint\/([^/]+)$/);
  const endpointName = route ? decodeURIComponent(route[1]) : null;

  // h("div.class#id", {attributes}, children...): an element; strings become text nodes.
  function h(tag, attributes, ...children) {
    const [name, ...rest] = tag.split(/(?=[.#])/);
    const element = document.createElement(name || "div");
    for (const part of rest) {
      if (part[0] === ".") element.classList.add(part.slice(1));
      else element.id = part.slice(1);
    }
    for (const [key, value] of Object.entries(attributes || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(element.dataset, value);
      else element.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      element.append(child instanceof Node ? child : String(child));
    }
    return element;
  }

  const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const fmt = (n) => number.format(n);
  const clock = (ms) => new Date(ms).toLocaleTimeString(undefined, { hour12: false });
  function ago(ms) {
    const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
    if (seconds < 60) return `${seconds} s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    return `${Math.round(seconds / 3600)} h ago`;
  }
  // A latency quantile from cumulative buckets: the bucket's upper bound, as text.
  function quantile(latency, q) {
    if (!latency || latency.count === 0) return "–";
    const wanted = latency.count * q;
    for (let i = 0; i < latency.cumulative.length; i++) {
      if (latency.cumulative[i] >= wanted) return `≤ ${seconds(latency.bounds[i])}`;
    }
    return `> ${seconds(latency.bounds[latency.bounds.length - 1])}`;
  }
  function seconds(s) {
    return s < 0.001 ? `${fmt(s * 1e6)} µs` : s < 1 ? `${fmt(s * 1000)} ms` : `${fmt(s)} s`;
  }
  function replace(id, element) {
    const old = document.getElementById(id);
    if (old) old.replaceWith(element);
  }

  // ---- the live feed -------------------------------------------------------------------------
  let latest = null;
  let series = [];
  const handlers = {};
  function connectFeed() {
    const url = "/console/feed" + (endpointName ? `?endpoint=${encodeURIComponent(endpointName)}` : "");
    const source = new EventSource(url);
    source.onopen = () => { feedStatus.textContent = "live"; feedStatus.className = "pill live"; };
    source.onerror = () => { feedStatus.textContent = "reconnecting…"; feedStatus.className = "pill down"; };
    for (const [name, handle] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handle(JSON.parse(event.data)));
    }
  }
  handlers.series = (samples) => { series = samples; drawChart(); };
  handlers.sample = (sample) => {
    if (series.length && series[series.length - 1].time === sample.time) return;
    series.push(sample);
    if (series.length > 600) series.shift();
    drawChart();
  };
  handlers.state = (state) => {
    latest = state;
    document.getElementById("node").textContent = `${state.node.name} · ${state.engine}`;
    if (endpointName) renderEndpointHeader(); else renderOverview();
  };

  // ---- the chart -----------------------------------------------------------------------------
  function drawChart() {
    const canvas = document.getElementById("chart");
    if (!canvas) return;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    canvas.width = width * ratio; canvas.height = height * ratio;
    const g = canvas.getContext("2d");
    g.scale(ratio, ratio);
    const style = getComputedStyle(document.documentElement);
    const colors = { grid: style.getPropertyValue("--line"), muted: style.getPropertyValue("--muted"),
      a: style.getPropertyValue("--accent"), b: style.getPropertyValue("--in"), c: style.getPropertyValue("--out") };
    g.clearRect(0, 0, width, height);
    const left = 44, bottom = height - 18, top = 8, right = width - 8;
    const lines = [
      { key: "connections", color: colors.a },
      { key: "messagesIn", color: colors.b },
      { key: "messagesOut", color: colors.c },
    ];
    const max = Math.max(1, ...series.flatMap((s) => lines.map((l) => s[l.key])));
    g.strokeStyle = colors.grid; g.fillStyle = colors.muted; g.lineWidth = 1; g.font = "11px system-ui, sans-serif";
    for (let i = 0; i <= 4; i++) {
      const y = bottom - ((bottom - top) * i) / 4;
      g.beginPath(); g.moveTo(left, y); g.lineTo(right, y); g.stroke();
      g.fillText(fmt((max * i) / 4), 4, y + 4);
    }
    const span = 600 * 1000, now = series.length ? series[series.length - 1].time : Date.now();
    const x = (time) => right - ((now - time) / span) * (right - left);
    g.fillText("10 min ago", left, height - 4);
    g.fillText("now", right - 22, height - 4);
    for (const line of lines) {
      g.strokeStyle = line.color; g.lineWidth = 1.8; g.beginPath();
      series.forEach((s, i) => {
        const px = x(s.time), py = bottom - (s[line.key] / max) * (bottom - top);
        if (i === 0) g.moveTo(px, py); else g.lineTo(px, py);
      });
      g.stroke();
    }
  }
  window.addEventListener("resize", drawChart);

  // ---- the overview --------------------------------------------------------------------------
  function stateCell(e) {
    if (e.error) {
      return h("td", {}, h("span.badge.bad", {}, "failed to load"), h("div.error-text", {}, e.error));
    }
    return h("td", {}, h("span.badge.ok", {}, "serving"),
      e.lastReload ? h("div.muted.small", {}, `reloaded ${ago(e.lastReload)}`) : null);
  }
  function renderOverview() {
    const state = latest;
    if (app.classList.contains("static")) {
      app.classList.remove("static");
      app.replaceChildren(
        h("div.cards#cards"),
        h("section.panel", {}, h("h2", {}, "Connections and messages per second, last 10 minutes"),
          h("canvas.chart#chart", { role: "img", "aria-label": "chart of connections and messages per second" }),
          h("div.legend", {},
            h("span", {}, h("i", { style: "background: var(--accent)" }), "connections"),
            h("span", {}, h("i", { style: "background: var(--in)" }), "messages in / s"),
            h("span", {}, h("i", { style: "background: var(--out)" }), "messages out / s"))),
        h("section.panel", {}, h("h2", {}, "Endpoints"), h("div.table-wrap#endpoints")),
        h("div.grid", {},
          h("section.panel", {}, h("h2", {}, "Workspace problems"), h("div#problems")),
          h("section.panel", {}, h("h2", {}, "Reloads"), h("div#reloads"))),
      );
      drawChart();
    }
    const total = (key) => state.endpoints.reduce((sum, e) => sum + e[key], 0);
    replace("cards", h("div.cards#cards", {},
      card("Endpoints", state.endpoints.length),
      card("Connections", total("connections"), "total-connections"),
      card("In / s", fmt(total("inPerSecond"))),
      card("Out / s", fmt(total("outPerSecond"))),
      card("Handler errors", total("errors") + total("terminations")),
      card("Isolates", state.isolates)));
    const rows = state.endpoints.map((e) => h("tr", { dataset: { endpoint: e.endpoint } },
      h("td", {}, h("a", { href: `/console/endpoint/${encodeURIComponent(e.endpoint)}` }, e.endpoint),
        e.description ? h("div.muted.small", {}, e.description) : null),
      h("td.hide-narrow", {}, h("a", { href: `/services/web/${encodeURIComponent(e.project)}/` }, e.project),
        h("div.muted.small", {}, e.handler)),
      stateCell(e),
      h("td.num", { dataset: { field: "connections" } }, e.connections),
      h("td.num", { dataset: { field: "in" } }, fmt(e.inPerSecond)),
      h("td.num", { dataset: { field: "out" } }, fmt(e.outPerSecond)),
      h("td.num", {}, e.errors + e.terminations),
      h("td.num.hide-narrow", {}, `${quantile(e.latency, 0.5)} / ${quantile(e.latency, 0.99)}`)));
    replace("endpoints", h("div.table-wrap#endpoints", {}, state.endpoints.length === 0
      ? h("p.muted", {}, "No endpoints yet: run ", h("code", {}, "switchboard new PROJECT"),
          " or add a *.websocket descriptor to a project.")
      : h("table.data", {}, h("thead", {}, h("tr", {},
          h("th", {}, "Endpoint"), h("th.hide-narrow", {}, "Project / handler"), h("th", {}, "State"),
          h("th.num", {}, "Open"), h("th.num", {}, "In/s"), h("th.num", {}, "Out/s"),
          h("th.num", {}, "Errors"), h("th.num.hide-narrow", {}, "Latency p50 / p99"))),
        h("tbody", {}, rows))));
    const problems = [...state.problems.map((p) => ["bad", p]), ...state.warnings.map((w) => ["warn", w])];
    replace("problems", h("div#problems", {}, problems.length === 0
      ? h("p.muted", {}, "None.")
      : h("ul.list", {}, problems.map(([kind, text]) =>
          h("li", {}, h(`span.badge.${kind}`, {}, kind === "bad" ? "problem" : "warning"), " ", h("span.mono", {}, text))))));
    replace("reloads", h("div#reloads", {}, state.reloads.length === 0
      ? h("p.muted", {}, "No reload since start: save a file in the workspace.")
      : h("ul.list", {}, state.reloads.slice().reverse().map((r) => h("li", {},
          h("div", {}, h(`span.badge.${r.failed ? "bad" : "ok"}`, {}, r.failed ? "failed" : "applied"),
            " ", h("span.muted.small", {}, `${clock(r.time)} · ${fmt(r.milliseconds)} ms · ${r.changed}`)),
          h("div.small", {}, r.report.join("; ")))))));
  }
  function card(label, value, id) {
    return h("div.card", id ? { id } : {}, h("div.label", {}, label), h("div.value", {}, value));
  }

  // ---- an endpoint page ----------------------------------------------------------------------
  let selected = null;
  function renderEndpointPage() {
    app.classList.remove("static");
    app.replaceChildren(
      h("div.crumbs", {}, h("a", { href: "/" }, "← all endpoints")),
      h("div#endpoint-header", {}, h("h1", {}, endpointName), h("p.sub", {}, "loading…")),
      h("div.grid", {},
        testClient(),
        h("section.panel", {}, h("div.row", {}, h("h2", { style: "margin:0;flex:1" }, "Handler log"),
          h("button.secondary", { onclick: () => document.getElementById("log").replaceChildren() }, "Clear")),
          h("div.log#log", { "aria-live": "polite" }, h("div.empty", {}, "Nothing logged yet.")))),
      h("section.panel", {}, h("h2", {}, "Connections"), h("div.table-wrap#connections", {}, h("p.muted", {}, "…")),
        connectionActions()),
      h("section.panel", {}, h("h2", {}, "Event latency"), h("div#latency")),
    );
  }
  function renderEndpointHeader() {
    const e = latest.endpoints.find((x) => x.endpoint === endpointName);
    if (!e) {
      replace("endpoint-header", h("div#endpoint-header", {}, h("h1", {}, endpointName),
        h("p.sub", {}, h("span.badge.bad", {}, "not served"), " No such endpoint in the workspace now.")));
      return;
    }
    replace("endpoint-header", h("div#endpoint-header", {},
      h("h1", {}, e.endpoint, " ", e.error ? h("span.badge.bad", {}, "failed to load") : h("span.badge.ok", {}, "serving")),
      h("p.sub", {}, e.description || "", e.description ? " · " : "", h("code", {}, e.path), " · handler ",
        h("code", {}, e.handler), e.instances > 1 ? ` (${e.instances} instances)` : "", " · declared in ", h("code", {}, e.declaredIn),
        ` · ${e.connections} open · ${fmt(e.inPerSecond)} in/s · ${fmt(e.outPerSecond)} out/s · ${e.errors + e.terminations} errors`),
      e.error ? h("div.error-text#endpoint-error", {}, e.error) : null));
    const l = e.latency;
    let previous = 0;
    const counts = l.cumulative.map((c) => { const n = c - previous; previous = c; return n; });
    const top = Math.max(1, ...counts);
    replace("latency", h("div#latency", {},
      h("div.muted.small", {}, `${l.count} events · p50 ${quantile(l, 0.5)} · p99 ${quantile(l, 0.99)} · mean ${l.count ? seconds(l.sum / l.count) : "–"}`),
      h("div.bars", {}, counts.map((n) => h("div.bar", { style: `height:${(n / top) * 100}%`, title: `${n}` }))),
      h("div.bars-labels", {}, l.bounds.map((b) => h("span", {}, seconds(b))))));
  }
  handlers.logs = (lines) => {
    const log = document.getElementById("log");
    if (!log) return;
    if (lines.length) log.replaceChildren();
    lines.forEach(appendLog);
  };
  handlers.log = (line) => appendLog(line);
  function appendLog(line) {
    const log = document.getElementById("log");
    if (!log) return;
    log.querySelector(".empty")?.remove();
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(h(`div.line.${line.level}`, {}, h("span.time", {}, line.time ? clock(line.time) : ""),
      h("span.lvl", {}, line.level), h("span.text", {}, line.text)));
    while (log.childElementCount > 1000) log.firstElementChild.remove();
    if (stick) log.scrollTop = log.scrollHeight;
  }
  handlers.connections = ({ total, shown }) => {
    const list = shown;
    if (selected !== null && !list.some((c) => c.id === selected)) selected = null;
    document.getElementById("act-id").textContent = selected === null ? "none (click a row)" : selected;
    const table = h("table.data", {}, h("thead", {}, h("tr", {}, h("th", {}, "Id"), h("th", {}, "Remote address"),
        h("th", {}, "Opened"), h("th.num", {}, "In"), h("th.num", {}, "Out"), h("th", {}, "Topics"),
        h("th.hide-narrow", {}, "conn.data"))),
      h("tbody", {}, list.map((c) => h(`tr.selectable${c.id === selected ? ".selected" : ""}`,
        { dataset: { id: c.id }, onclick: () => { selected = c.id; handlers.connections({ total, shown }); } },
        h("td.mono", {}, c.id), h("td.mono", {}, c.remoteAddress), h("td", {}, ago(c.openedAt)),
        h("td.num", { dataset: { field: "in" } }, c.messagesIn), h("td.num", { dataset: { field: "out" } }, c.messagesOut),
        h("td", {}, c.topics.join(", ") || "–"), h("td.mono.hide-narrow", {}, c.data ?? "–")))));
    replace("connections", h("div.table-wrap#connections", {}, list.length === 0
      ? h("p.muted", {}, "No connection open. Connect with the test client above.")
      : [table, total > list.length ? h("p.muted.small", {}, `The ${list.length} oldest of ${total} open connections.`) : null]));
  };
  function connectionActions() {
    const result = h("span.muted.small#act-result");
    async function act(path, body) {
      if (selected === null) { result.textContent = "select a connection first"; return; }
      const response = await fetch(`/console/connections/${selected}/${path}`, {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      result.textContent = response.ok ? `${path === "send" ? "sent to" : "closing"} ${selected}` : await response.text();
    }
    return h("div", { style: "margin-top:12px" },
      h("div.small.muted", {}, "Selected: ", h("span.mono#act-id", {}, "none (click a row)")),
      h("div.row", {}, h("input.grow#act-text", { placeholder: "text to send to the selected connection" }),
        h("button#act-send", { onclick: () => act("send", { text: document.getElementById("act-text").value }) }, "Send")),
      h("div.row", {}, h("input.short#act-code", { value: "4000", "aria-label": "close code" }),
        h("input.grow#act-reason", { placeholder: "close reason", value: "closed from the console" }),
        h("button.danger#act-disconnect", { onclick: () => act("disconnect", {
          code: Number(document.getElementById("act-code").value),
          reason: document.getElementById("act-reason").value }) }, "Disconnect"),
        result));
  }

  // ---- the test client -----------------------------------------------------------------------
  function testClient() {
    let socket = null;
    const transcript = h("div.transcript#tc-transcript", { "aria-live": "polite" });
    const status = h("span.muted.small#tc-status", {}, "not connected");
    function note(direction, text, size, kind) {
      transcript.append(h(`div.msg.${kind}`, {}, h("span.meta", {}, clock(Date.now())), h("span.dir", {}, direction),
        h("span.meta", {}, size === null ? "" : `${size} B`), h("span.body", {}, text)));
      transcript.scrollTop = transcript.scrollHeight;
    }
    function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" "); }
    function connect() {
      if (socket) socket.close(1000);
      const protocol = document.getElementById("tc-protocol").value.trim();
      const query = document.getElementById("tc-query").value.trim().replace(/^\?/, "");
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const url = `${scheme}//${location.host}/websockets/v4/service/${encodeURIComponent(endpointName)}${query ? "?" + query : ""}`;
      socket = protocol ? new WebSocket(url, protocol.split(/\s*,\s*/)) : new WebSocket(url);
      socket.binaryType = "arraybuffer";
      status.textContent = "connecting…";
      socket.onopen = () => { status.textContent = `connected${socket.protocol ? " (" + socket.protocol + ")" : ""}`; note("•", `connected to ${url}`, null, "note"); };
      socket.onmessage = (event) => {
        if (typeof event.data === "string") note("←", event.data, new TextEncoder().encode(event.data).length, "in");
        else note("←", `binary: ${hex(new Uint8Array(event.data))}`, event.data.byteLength, "in");
      };
      socket.onclose = (event) => {
        status.textContent = `closed (${event.code})`;
        note("•", `closed: ${event.code}${event.reason ? " " + event.reason : ""}`, null, "note");
      };
      socket.onerror = () => note("•", "error (see the close that follows)", null, "note");
    }
    function send() {
      if (!socket || socket.readyState !== WebSocket.OPEN) { note("•", "not connected", null, "note"); return; }
      const mode = document.getElementById("tc-mode").value;
      const text = document.getElementById("tc-text").value;
      if (mode === "hex") {
        const digits = text.replace(/\s+/g, "");
        if (!/^([0-9a-fA-F]{2})*$/.test(digits)) { note("•", "hex: an even number of hexadecimal digits", null, "note"); return; }
        const bytes = new Uint8Array(digits.match(/../g)?.map((d) => parseInt(d, 16)) ?? []);
        socket.send(bytes);
        note("→", `binary: ${hex(bytes)}`, bytes.length, "out");
        return;
      }
      if (mode === "json") {
        try { JSON.parse(text); } catch (error) { note("•", `not JSON: ${error.message}`, null, "note"); return; }
      }
      socket.send(text);
      note("→", text, new TextEncoder().encode(text).length, "out");
    }
    function close() {
      if (!socket) return;
      const code = Number(document.getElementById("tc-code").value) || 1000;
      socket.close(code, document.getElementById("tc-reason").value);
    }
    return h("section.panel", {}, h("div.row", {}, h("h2", { style: "margin:0;flex:1" }, "Test client"), status),
      h("div.row", {}, h("input.grow#tc-query", { placeholder: "query string, e.g. token=abc" }),
        h("input#tc-protocol", { placeholder: "subprotocol", size: 12 }),
        h("button#tc-connect", { onclick: connect }, "Connect")),
      transcript,
      h("div.row", { style: "margin-top:8px" }, h("select#tc-mode", { "aria-label": "message kind" },
        h("option", { value: "text" }, "Text"), h("option", { value: "json" }, "JSON"), h("option", { value: "hex" }, "Binary (hex)")),
        h("input.grow#tc-text", { placeholder: "message", onkeydown: (e) => { if (e.key === "Enter") send(); } }),
        h("button#tc-send", { onclick: send }, "Send")),
      h("div.row", {}, h("input.short#tc-code", { value: "1000", "aria-label": "close code" }),
        h("input.grow#tc-reason", { placeholder: "close reason" }),
        h("button.secondary#tc-close", { onclick: close }, "Close")));
  }

  if (endpointName) renderEndpointPage();
  connectFeed();
})();
