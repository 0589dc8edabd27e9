// Talking to the modelq API: JSON requests whose errors read well, and Server-Sent Events.

/** An answer that was not 2xx, with the API's own `{error, message, field}`. */
export class ApiError extends Error {
  constructor(status, body) {
    const data = body && typeof body === "object" ? body : { message: String(body || "") };
    super(data.message || data.detail || `HTTP ${status}`);
    this.status = status;
    this.error = data.error || (status ? `HTTP ${status}` : "NetworkError");
    this.field = data.field || null;
  }
}

/** A one-line, readable account of an error: "422 InvalidInput: width must be ... (field: width)". */
export function describe(err) {
  if (err instanceof ApiError) {
    const code = err.status ? `${err.status} ` : "";
    const field = err.field && !err.message.includes(err.field) ? ` (field: ${err.field})` : "";
    return `${code}${err.error}: ${err.message}${field}`;
  }
  return err && err.message ? err.message : String(err);
}

/**
 * Call the API. `json` sends a JSON body, `form` a FormData (multipart).
 * Resolves with the parsed body; rejects with an ApiError.
 */
export async function api(path, { method, json, form, signal } = {}) {
  const init = { method: method || (json || form ? "POST" : "GET"), signal, headers: { accept: "application/json" } };
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form) {
    init.body = form;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, { error: "NetworkError", message: `cannot reach the modelq API (${err.message})` });
  }
  const text = await response.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  if (!response.ok) {
    const error = new ApiError(response.status, body || response.statusText);
    if (response.status === 401) askForKey(error.message);
    throw error;
  }
  return body;
}

// The API key (when the API has keys configured) -------------------------------------------------

/**
 * The UI keeps the key in a cookie (`modelq_api_key`, SameSite=Strict) rather than a header:
 * EventSource streams and <img> artifacts cannot send headers, and every request carries a cookie.
 */
export const KEY_COOKIE = "modelq_api_key";

export function hasKey() {
  return document.cookie.split(";").some((part) => part.trim().startsWith(`${KEY_COOKIE}=`));
}

function setKey(key) {
  const value = key ? encodeURIComponent(key) : "";
  const expiry = key ? "max-age=31536000" : "max-age=0";
  document.cookie = `${KEY_COOKIE}=${value}; path=/; SameSite=Strict; ${expiry}`;
}

/** Show the key dialog; `reason` is what the API said. Saving the key reloads the page with it. */
export function askForKey(reason) {
  const dialog = document.getElementById("key-dialog");
  if (!dialog || dialog.open) return;
  document.getElementById("key-reason").textContent = hasKey() ? `The API refused the key: ${reason}` : `This modelq API needs a key: ${reason}`;
  document.getElementById("key-button").hidden = false;
  dialog.showModal();
}

/** Wire the header button and the dialog (once, at start). */
export function setUpKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const button = document.getElementById("key-button");
  if (hasKey()) button.hidden = false;
  button.addEventListener("click", () => { if (!dialog.open) dialog.showModal(); });
  form.addEventListener("submit", () => {
    setKey(form.key.value.trim());
    location.reload();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    setKey(null);
    location.reload();
  });
}

export const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

/**
 * Follow one job with `GET /v1/jobs/{id}/events` until it finishes.
 * `onUpdate(job)` is called on every change; resolves with the finished job record.
 * `signal` (an AbortSignal) stops following without settling.
 */
export function watchJob(id, onUpdate = () => {}, { signal } = {}) {
  return new Promise((resolve, reject) => {
    const source = new EventSource(`/v1/jobs/${encodeURIComponent(id)}/events`);
    let last = null;
    const stop = () => source.close();
    signal?.addEventListener("abort", stop);
    source.addEventListener("job", (event) => {
      last = JSON.parse(event.data);
      onUpdate(last);
    });
    source.addEventListener("end", () => {
      stop();
      if (last && FINISHED.has(last.status)) resolve(last);
      else api(`/v1/jobs/${encodeURIComponent(id)}`).then(resolve, reject);
    });
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) return; // the browser reconnects by itself
      // The stream was refused (e.g. 404): ask once more to get the API's message.
      api(`/v1/jobs/${encodeURIComponent(id)}`).then((job) => {
        if (FINISHED.has(job.status)) resolve(job);
        else reject(new ApiError(0, { error: "StreamClosed", message: `lost the event stream of job ${id}` }));
      }, reject);
    };
  });
}

/** A finished job that did not succeed, as an Error whose message says why. */
export function jobError(job) {
  const what = job.status === "cancelled" ? "was cancelled" : "failed";
  return new ApiError(0, { error: `Job ${what}`, message: `${job.task} job ${job.id.slice(0, 8)}: ${job.error || job.status}` });
}

// One shared stream of every job's changes (GET /v1/events) ---------------------------------

const listeners = new Set();
let allJobs = null;

function setLive(state, title) {
  const dot = document.getElementById("live");
  if (!dot) return;
  dot.className = `live ${state}`;
  dot.title = title;
}

/** Open the shared stream (once); the header's "live" dot shows its state. */
export function connect() {
  if (allJobs) return;
  allJobs = new EventSource("/v1/events");
  allJobs.onopen = () => setLive("on", "live updates: connected");
  allJobs.onerror = () => setLive("off", "live updates: reconnecting…");
  allJobs.addEventListener("job", (event) => {
    const job = JSON.parse(event.data);
    for (const listener of listeners) {
      try { listener(job); } catch (err) { console.error(err); }
    }
  });
}

/**
 * Call `listener(job)` for every change of any job (records without input and result).
 * Returns a function that stops listening.
 */
export function onJobChange(listener) {
  connect();
  listeners.add(listener);
  return () => listeners.delete(listener);
}
