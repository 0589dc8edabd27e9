// Jobs: every job with its status, progress, queue position and duration, live from GET /v1/events;
// filters, cancel, details, a form to submit any task, and the jobs waiting and running per owner.

import { api, FINISHED, onJobChange } from "../api.js";
import { badge, fill, fmt, h, num, onSubmit, progress, status } from "../ui.js";

export const title = "Jobs";
const PAGE_SIZE = 50;
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const EXAMPLES = { echo: { x: 1 }, sleep: { seconds: 5, steps: 10 } };

export function mount(root) {
  const taskSel = h("select", { name: "task", id: "submit-task" });
  const input = h("textarea", { name: "input", id: "submit-input", rows: 3, class: "mono" }, JSON.stringify(EXAMPLES.echo));
  taskSel.addEventListener("change", () => { input.value = JSON.stringify(EXAMPLES[taskSel.value] || {}); });
  const submit = h("form", { id: "submit-form" },
    h("div", { class: "row" },
      h("div", { style: "flex:0 0 200px" }, h("label", { for: "submit-task" }, "Task"), taskSel),
      h("div", { style: "flex:3" }, h("label", { for: "submit-input" }, "Input (JSON)"), input),
      h("div", { style: "flex:0 0 90px" }, h("label", { for: "submit-priority" }, "Priority"), h("input", { type: "number", name: "priority", id: "submit-priority", min: 0, max: 9, placeholder: "0–9" })),
      h("div", { style: "flex:0 0 auto" }, h("button", { type: "submit", class: "primary", id: "submit-job" }, "Submit"))));

  const statusFilter = h("select", { id: "filter-status" }, h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  const taskFilter = h("select", { id: "filter-task" }, h("option", { value: "" }, "any task"));
  const counter = h("span", { class: "muted small", id: "job-count" });
  const owners = h("div", { class: "small muted", id: "owner-counts", style: "margin-bottom:8px" });
  const rows = h("tbody", { id: "job-rows" });
  const more = h("button", { type: "button", id: "more", hidden: true, onclick: () => load(true) }, "Load more");
  const detail = h("div", { id: "job-detail" });
  fill(root,
    h("h1", {}, "Jobs"),
    h("p", { class: "lead" }, "Every job in the job store, updated live. Click a job for its input, result or error."),
    h("section", { class: "card" }, h("h2", {}, "Submit a job"), submit),
    h("section", { class: "card" },
      h("div", { class: "row", style: "align-items:center; margin-bottom:10px" },
        h("div", { style: "flex:0 0 auto" }, h("h2", { style: "margin:0" }, "All jobs")), statusFilter, taskFilter, h("div", { class: "spacer" }, counter)),
      owners,
      h("div", { class: "table-wrap" }, h("table", { id: "jobs-table" },
        h("thead", {}, h("tr", {}, ["job", "task", "status", "progress", "queue", "position", "worker", "created", "duration", ""].map((c) => h("th", {}, c)))),
        rows)),
      h("div", { class: "actions" }, more)),
    detail);

  const jobs = new Map(); // id -> {job, row}
  let total = 0;
  let selected = (location.hash.match(/[?&]id=([\w-]+)/) || [])[1] || null;

  const matches = (job) => (!statusFilter.value || job.status === statusFilter.value) && (!taskFilter.value || job.task === taskFilter.value);

  function render(job) {
    const cancel = FINISHED.has(job.status) ? "" : h("button", { type: "button", class: "small danger", title: "cancel this job",
      onclick: async (event) => {
        event.stopPropagation();
        try { await api(`/v1/jobs/${job.id}`, { method: "DELETE" }); status.info(`Cancelled job ${fmt.shortId(job.id)}.`); }
        catch (err) { status.error(err); }
      } }, "Cancel");
    return [
      h("td", { class: "mono", title: job.id }, fmt.shortId(job.id)), h("td", {}, job.task), h("td", {}, badge(job.status)),
      h("td", { style: "min-width:150px" }, progress(job)), h("td", { class: "small" }, job.queue),
      h("td", { class: "num" }, job.status === "queued" && job.queue_position ? `#${job.queue_position}` : ""),
      h("td", { class: "small" }, job.worker || ""), h("td", { class: "small" }, fmt.time(job.created_at)),
      h("td", { class: "num duration" }, fmt.duration(job)), h("td", {}, cancel),
    ];
  }

  function put(job, { top = false } = {}) {
    const known = jobs.get(job.id);
    if (known) {
      known.job = { ...known.job, ...job };
      fill(known.row, render(known.job));
      if (job.id === selected) showDetail(job.id);
      return;
    }
    const row = h("tr", { class: "clickable", "data-id": job.id, "data-status": job.status, onclick: () => showDetail(job.id) }, render(job));
    jobs.set(job.id, { job, row });
    if (top) rows.prepend(row); else rows.append(row);
  }

  // A job new to this page: on top, in place of the "No jobs match." row if that is shown.
  function add(job) {
    rows.querySelector("td.empty")?.parentElement.remove();
    put(job, { top: true });
    total += 1;
    count();
  }

  function count() {
    counter.textContent = `${jobs.size} shown of ${total}`;
    more.hidden = jobs.size >= total;
  }

  // Queued (held for their turn) and running jobs per owner: what fair share divides (your own, with keys).
  let ownersDue = null;
  async function showOwners() {
    ownersDue = null;
    try {
      const { owners: rows } = await api("/v1/owners");
      fill(owners, rows.length ? `Waiting and running, per owner: ${rows.map((o) =>
        `${o.owner || "everyone"} ${o.queued} queued${o.held ? ` (${o.held} waiting their turn)` : ""}, ${o.running} running` +
        (o.weight !== 1 ? `, weight ${o.weight}` : "")).join(" · ")}` : "Nothing queued or running.");
    } catch (err) {
      status.error(err);
    }
  }
  const refreshOwners = () => { ownersDue ??= setTimeout(showOwners, 500); };

  let loading = 0; // only the answer to the latest request fills the table

  async function load(append = false) {
    const mine = ++loading;
    const params = new URLSearchParams({ limit: PAGE_SIZE, offset: append ? jobs.size : 0 });
    if (statusFilter.value) params.set("status", statusFilter.value);
    if (taskFilter.value) params.set("task", taskFilter.value);
    try {
      const page = await api(`/v1/jobs?${params}`);
      if (mine !== loading) return;
      if (!append) { jobs.clear(); fill(rows); }
      total = page.total;
      page.jobs.forEach((job) => put(job));
      if (!page.jobs.length && !append) rows.append(h("tr", {}, h("td", { colspan: 10, class: "empty" }, "No jobs match.")));
      count();
    } catch (err) {
      status.error(err);
    }
  }

  async function showDetail(id) {
    selected = id;
    for (const { row } of jobs.values()) row.classList.toggle("selected", row.dataset.id === id);
    try {
      const job = await api(`/v1/jobs/${id}`);
      const body = job.error ? h("pre", { class: "error-text" }, job.error) : h("pre", { id: "job-result" }, job.result == null ? "no result yet" : JSON.stringify(job.result, null, 2).slice(0, 20000));
      fill(detail, h("section", { class: "card", id: "detail-card", "data-id": job.id },
        h("div", { class: "row" }, h("h2", {}, `${job.task} ${fmt.shortId(job.id)} `, badge(job.status)), h("div", { class: "spacer" }),
          h("button", { type: "button", style: "flex:0 0 auto", onclick: () => { selected = null; fill(detail); } }, "Close")),
        h("div", { class: "grid cols-even" },
          h("div", {}, h("h3", {}, "Input"), h("pre", {}, JSON.stringify(job.input, null, 2).slice(0, 20000))),
          h("div", {}, h("h3", {}, job.error ? "Error" : "Result"), body,
            job.artifacts?.length ? [h("h3", {}, "Artifacts"), h("ul", {}, job.artifacts.map((a) =>
              h("li", {}, h("a", { href: `/v1/jobs/${job.id}/artifacts/${a.name}`, target: "_blank" }, a.name))))] : null)),
        h("div", { class: "small muted" }, `attempts ${job.attempts} · runner ${job.runner} · created ${job.created_at} · started ${job.started_at || "–"} · finished ${job.finished_at || "–"}`)));
    } catch (err) {
      status.error(err);
    }
  }

  onSubmit(submit, async (data) => {
    let parsed;
    try { parsed = JSON.parse(String(data.get("input") || "{}")); }
    catch (err) { throw new Error(`Input is not valid JSON: ${err.message}`); }
    const job = await api("/v1/jobs", { json: { task: data.get("task"), input: parsed, priority: num(data, "priority") } });
    status.info(`Submitted ${job.task} job ${fmt.shortId(job.id)}.`);
    if (matches(job) && !jobs.has(job.id)) add(job);
    showDetail(job.id);
  });
  statusFilter.addEventListener("change", () => load());
  taskFilter.addEventListener("change", () => load());

  api("/v1/tasks").then((tasks) => {
    for (const t of tasks) {
      taskSel.append(h("option", { value: t.name, selected: t.name === "echo" }, t.name));
      taskFilter.append(h("option", { value: t.name }, t.name));
    }
  }).catch((err) => status.error(err));
  load().then(() => { if (selected) showDetail(selected); });
  showOwners();

  const stop = onJobChange((job) => {
    if (jobs.has(job.id)) put(job);
    else if (matches(job)) add(job);
    refreshOwners();
  });
  // Running jobs' durations tick.
  const timer = setInterval(() => {
    for (const { job, row } of jobs.values()) if (job.status === "running") row.querySelector(".duration").textContent = fmt.duration(job);
  }, 1000);
  return () => { stop(); clearInterval(timer); clearTimeout(ownersDue); };
}
