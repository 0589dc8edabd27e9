// Cluster: workers (pool, jobs in hand, queues, resident models and memory), queues with their
// depths, and models, live from GET /v1/cluster/events.

import { badge, fill, fmt, h, status, table } from "../ui.js";

export const title = "Cluster";

export function mount(root) {
  const summary = h("div", { class: "stats", id: "cluster-summary" });
  const workers = h("div", { id: "workers" }, h("div", { class: "empty" }, "Asking the workers…"));
  const queues = h("div", { id: "queues" });
  const models = h("div", { id: "models" });
  const updated = h("span", { class: "muted small", id: "cluster-updated" });
  fill(root,
    h("div", { class: "row" }, h("h1", {}, "Cluster"), h("div", { style: "flex:0 0 auto" }, updated)),
    h("p", { class: "lead" }, "The workers that answer Celery's inspect, the queues in the broker, and the models each worker process holds."),
    summary,
    h("section", { class: "card" }, h("h2", {}, "Workers"), workers),
    h("div", { class: "grid cols-even", style: "margin-top:16px" },
      h("section", { class: "card" }, h("h2", {}, "Queues"), queues),
      h("section", { class: "card" }, h("h2", {}, "Models"), models)));

  function render(report) {
    const jobs = report.jobs || {};
    const online = report.workers.filter((w) => w.online);
    const resident = report.workers.reduce((sum, w) => sum + (w.resident_bytes || 0), 0);
    fill(summary,
      [["workers online", online.length], ["running jobs", jobs.running || 0], ["queued jobs", jobs.queued || 0],
        ["resident models", fmt.bytes(resident)], ["succeeded / failed", `${jobs.succeeded || 0} / ${jobs.failed || 0}`]]
        .map(([label, n]) => h("div", { class: "stat" }, h("div", { class: "n" }, n), h("div", { class: "l" }, label))));
    fill(workers, report.workers.length ? table(
      ["worker", "state", "pool", "jobs done", "running now", "queues", "max RSS", "models held"],
      report.workers.map((w) => [
        h("b", {}, w.name), badge(w.online ? "online" : "offline"),
        h("span", { class: "nowrap" }, w.pool ? `${w.pool} × ${w.concurrency ?? "?"}` : "–"), { value: w.processed ?? "–", attrs: { class: "num" } },
        w.active.length ? h("div", {}, w.active.map((t) => h("div", { class: "small" }, `${t.task} `, h("span", { class: "mono muted" }, fmt.shortId(t.id))))) : h("span", { class: "muted" }, "idle"),
        h("span", { class: "small" }, w.queues.join(", ") || "–"),
        { value: fmt.bytes(w.rss_bytes), attrs: { class: "num nowrap" } },
        w.models.length ? h("div", {}, w.models.map((m) => h("div", { class: "small model-row" },
          badge(m.resident ? "resident" : "unloaded", m.resident ? "yes" : "no"), ` ${m.model} `,
          h("span", { class: "muted" }, `${fmt.bytes(m.bytes)} · ${m.device} · pid ${m.pid}`)))) : h("span", { class: "muted" }, "none"),
      ]), { id: "workers-table" }) : h("div", { class: "empty" }, "No worker answered. Start one with: modelq worker -Q default"));
    fill(queues, table(
      ["queue", { title: "depth (broker)", attrs: { class: "num" } }, { title: "queued jobs", attrs: { class: "num" } }, "consumers",
        { title: "stranded", attrs: { class: "num" } }],
      report.queues.map((q) => [h("span", { class: "mono" }, q.name), { value: q.depth ?? "?", attrs: { class: "num" } },
        { value: q.queued_jobs, attrs: { class: "num" } }, h("span", { class: "small" }, q.consumers.join(", ") || "none"),
        q.stranded ? h("span", { class: "badge failed", title: "waiting with no worker to serve them" }, String(q.stranded))
          : { value: 0, attrs: { class: "num muted" } }]),
      { id: "queues-table" }));
    fill(models, report.models.length ? table(
      ["model", "declared", "resident on", { title: "loads", attrs: { class: "num" } }, { title: "hits", attrs: { class: "num" } }],
      report.models.map((m) => [
        h("b", {}, m.id),
        h("span", { class: "small" }, m.declared ? `${m.declared.device || "auto"} · ${typeof m.declared.memory === "number" ? fmt.bytes(m.declared.memory) : m.declared.memory ?? "size unknown"}` : "by path"),
        m.resident_on.length ? h("span", { class: "small" }, m.resident_on.join(", ")) : h("span", { class: "muted" }, "nowhere"),
        { value: m.workers.reduce((s, w) => s + w.loads, 0), attrs: { class: "num" } },
        { value: m.workers.reduce((s, w) => s + w.hits, 0), attrs: { class: "num" } },
      ]), { id: "models-table" }) : h("div", { class: "empty" }, "No models declared or loaded."));
    updated.textContent = `updated ${fmt.time(report.at)} · broker ${report.broker}`;
  }

  const source = new EventSource("/v1/cluster/events");
  source.addEventListener("cluster", (event) => {
    if (document.querySelector("#status.error .text")?.dataset.source === "cluster") status.clear();
    render(JSON.parse(event.data));
  });
  source.addEventListener("problem", (event) => {
    const problem = JSON.parse(event.data);
    status.error(new Error(`${problem.error}: ${problem.message}`));
    document.querySelector("#status .text").dataset.source = "cluster";
  });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) status.error(new Error("The cluster event stream closed; reload the page.")); };
  return () => source.close();
}
