// The dashboard's shared script (served at /assets/common.js; docs/http-api.md, "Dashboard"): the API
// token, API calls, reading Server-Sent Events with fetch (so the bearer token can be sent), table
// cells, times, and line charts (uPlot, /assets/uplot.js). Pages use it through `window.Oculus`.

(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "oculus-token";

  /** Binds the page's token input to local storage; `onChange` runs after the operator changes it. */
  function bindToken(input, onChange) {
    input.value = localStorage.getItem(TOKEN_KEY) || "";
    input.addEventListener("change", () => {
      localStorage.setItem(TOKEN_KEY, input.value);
      onChange();
    });
  }

  function headers(extra) {
    const h = Object.assign({ accept: "application/json" }, extra || {});
    const token = localStorage.getItem(TOKEN_KEY);
    if (token) h.authorization = `Bearer ${token}`;
    return h;
  }

  async function api(method, path, body) {
    const res = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "content-type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error?.message || `HTTP ${res.status}`);
    return data;
  }

  /**
   * Reads a Server-Sent Events response body, calling onFrame({id, event, data}) per frame (data
   * parsed as JSON). Resolves when the stream ends; rejects when it breaks.
   */
  async function readEvents(res, onFrame) {
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      for (let end = buffer.indexOf("\n\n"); end >= 0; end = buffer.indexOf("\n\n")) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id = null;
        let event = "message";
        let data = "";
        for (const line of frame.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "id") id = val;
          else if (field === "event") event = val;
          else if (field === "data") data += (data ? "\n" : "") + val;
        }
        if (id !== null || data) onFrame({ id, event, data: data ? JSON.parse(data) : null });
      }
    }
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  /** A cell holding a link to the build's page. */
  function buildCell(id) {
    const td = document.createElement("td");
    td.className = "id";
    const a = document.createElement("a");
    a.href = `/builds/${encodeURIComponent(id)}`;
    a.textContent = id;
    td.appendChild(a);
    return td;
  }

  /**
   * A selector that finds `el` again among freshly rendered rows: its link target, or its data-*
   * attributes (data-stop="ID"), or null when it has neither.
   */
  function identityOf(el) {
    if (el.tagName === "A" && el.getAttribute("href"))
      return `a[href="${CSS.escape(el.getAttribute("href"))}"]`;
    const data = Object.entries(el.dataset);
    if (data.length === 0) return null;
    const attrs = data.map(
      ([k, v]) => `[data-${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}="${CSS.escape(v)}"]`,
    );
    return el.tagName.toLowerCase() + attrs.join("");
  }

  /**
   * Replaces a table body's rows; "none" in one cell spanning `columns` when there are none. A control
   * that had the keyboard focus keeps it in the new rows (a reload must not throw a keyboard user
   * back to the top of the page).
   */
  function fill(tbody, rows, columns) {
    const active = document.activeElement;
    const focused = active && tbody.contains(active) ? identityOf(active) : null;
    tbody.replaceChildren();
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = cell("none", "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      tbody.appendChild(tr);
      return;
    }
    for (const row of rows) tbody.appendChild(row);
    const again = focused && tbody.querySelector(focused);
    if (again) again.focus();
  }

  function age(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    return s < 120
      ? `${s.toFixed(0)} s`
      : s < 7200
        ? `${(s / 60).toFixed(0)} min`
        : `${(s / 3600).toFixed(1)} h`;
  }

  const time = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "-");

  /** Percent done of a progress report: its percent, else iteration / maxIterations; null if neither. */
  function percentOf(progress) {
    if (!progress) return null;
    if (progress.percent != null) return progress.percent;
    if (progress.iteration != null && progress.maxIterations)
      return (100 * progress.iteration) / progress.maxIterations;
    return null;
  }

  /**
   * A uPlot line chart in `box` (x: Unix seconds; series: [{label, stroke}]); returns {setData}.
   * Sized to its box; redrawn on resize.
   */
  function lineChart(box, series, options) {
    const opts = Object.assign(
      {
        width: Math.max(240, box.clientWidth || 360),
        height: 180,
        series: [{}].concat(
          series.map((s) => ({
            label: s.label,
            stroke: s.stroke,
            width: 2,
            points: { show: true, size: 4 },
          })),
        ),
        axes: [{}, { size: 56 }],
        legend: { live: false },
        cursor: { show: false },
      },
      options || {},
    );
    const empty = [[]].concat(series.map(() => []));
    const chart = new window.uPlot(opts, empty, box);
    new ResizeObserver(() =>
      chart.setSize({ width: Math.max(240, box.clientWidth), height: opts.height }),
    ).observe(box);
    return { setData: (data) => chart.setData(data), chart };
  }

  window.Oculus = {
    $,
    bindToken,
    headers,
    api,
    readEvents,
    cell,
    buildCell,
    fill,
    age,
    time,
    percentOf,
    lineChart,
  };
})();
