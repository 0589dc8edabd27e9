// Small DOM helpers shared by the pages.

import { ApiError, describe } from "./api.js";

/** Make an element: h("td", {class: "num"}, "3"). Attributes starting with "on" become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "html") el.innerHTML = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A table from column titles and rows of cells (strings, nodes, or {value, class}). */
export function table(columns, rows, attrs = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => (typeof c === "string" ? h("th", {}, c) : h("th", c.attrs || {}, c.title)))));
  const body = h("tbody", {}, rows.map((row) => (row instanceof Node ? row : h("tr", {}, row.map(cell)))));
  return h("div", { class: "table-wrap" }, h("table", attrs, head, body));
}

export function cell(value) {
  if (value instanceof Node) return h("td", {}, value);
  if (value && typeof value === "object" && "value" in value) return h("td", value.attrs || {}, value.value);
  return h("td", {}, value ?? "");
}

export function badge(text, kind = text) {
  return h("span", { class: `badge ${kind}` }, text);
}

/** A progress bar for a job (its status colours it), with its message under it. */
export function progress(job) {
  const fraction = Math.max(0, Math.min(1, job.progress?.fraction ?? 0));
  const label = job.progress?.message || (job.status === "queued" && job.queue_position ? `#${job.queue_position} in ${job.queue}` : "");
  return h("div", {},
    h("div", { class: `progress ${job.status}`, role: "progressbar", "aria-valuenow": Math.round(fraction * 100) },
      h("span", { style: `width:${(fraction * 100).toFixed(1)}%` })),
    label ? h("div", { class: "progress-label", title: label }, label) : null);
}

export const fmt = {
  /** The first 8 characters of an id, keeping an island model step's suffix ("-e2-i1"). */
  shortId(id) {
    const step = (id || "").match(/-(e\d+-(?:i\d+|a))$/);
    return (id || "").slice(0, 8) + (step ? `·${step[1]}` : "");
  },
  bytes(n) {
    if (n === null || n === undefined) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${n.toFixed(i && n < 10 ? 1 : 0)} ${units[i]}`;
  },
  seconds(s) {
    if (s === null || s === undefined || Number.isNaN(s)) return "–";
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  },
  duration(job) {
    if (!job.started_at) return "–";
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return fmt.seconds((end - Date.parse(job.started_at)) / 1000);
  },
  time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  },
  number: (x, digits = 3) => (typeof x === "number" ? x.toFixed(digits) : "–"),
};

// The status line under the navigation -------------------------------------------------------

const statusEl = () => document.getElementById("status");
let markedFields = [];

function show(kind, text) {
  const el = statusEl();
  el.className = `status ${kind}`;
  el.hidden = false;
  fill(el, h("button", { class: "close", title: "dismiss", onclick: () => status.clear() }, "×"), h("span", { class: "text" }, text));
}

export const status = {
  info: (text) => show("info", text),
  ok: (text) => show("ok", text),
  /** Show an error; an API error that names a field of `form` marks that field too. */
  error(err, form) {
    show("error", describe(err));
    if (form && err instanceof ApiError && err.field) {
      const name = String(err.field).split(".")[0];
      const input = form.querySelector(`[name="${CSS.escape(name)}"]`);
      if (input) { input.classList.add("invalid"); markedFields.push(input); }
    }
  },
  clear() {
    const el = statusEl();
    el.hidden = true;
    fill(el);
    for (const input of markedFields) input.classList.remove("invalid");
    markedFields = [];
  },
};

/** Run `fn` for a form's submit, with its submit button disabled meanwhile and errors shown. */
export function onSubmit(form, fn) {
  form.noValidate = true; // the API checks the input and its message says what to fix
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    status.clear();
    if (button) button.disabled = true;
    try {
      await fn(new FormData(form));
    } catch (err) {
      if (err.name !== "AbortError") status.error(err, form);
    } finally {
      if (button) button.disabled = false;
    }
  });
}

/** A number from a form field, or undefined when it is empty. */
export function num(data, name) {
  const raw = String(data.get(name) ?? "").trim();
  return raw === "" ? undefined : Number(raw);
}

/** A string from a form field, or undefined when it is empty. */
export function text(data, name) {
  const raw = String(data.get(name) ?? "").trim();
  return raw === "" ? undefined : raw;
}

/** A labelled field. */
export function field(labelText, input, hint) {
  return h("div", {}, h("label", { for: input.id || undefined }, labelText), input, hint ? h("div", { class: "small muted" }, hint) : null);
}
