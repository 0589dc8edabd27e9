// Documents: upload a PDF (POST /v1/documents), watch its enrich job, browse its snippets page by
// page next to the page images, and search them (GET /v1/documents/{id}/search).

import { api, jobError, onJobChange, watchJob } from "../api.js";
import { badge, fill, fmt, h, onSubmit, progress, status, text } from "../ui.js";

export const title = "Documents";
const TASK = "enrich";

export function mount(root) {
  const abort = new AbortController();
  const upload = h("form", { id: "upload-form" },
    h("label", { for: "pdf" }, "PDF file"),
    h("input", { type: "file", name: "file", id: "pdf", accept: "application/pdf,.pdf" }),
    h("label", { for: "doc-model" }, "Embedding model"),
    h("input", { name: "model", id: "doc-model", placeholder: "minilm" }),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "upload" }, "Upload and enrich")));
  const watching = h("div", { id: "doc-progress" });
  const recent = h("div", { id: "recent-docs" });
  const view = h("div", { id: "document" }, h("div", { class: "empty" }, "Upload a PDF, or open one from the list."));
  fill(root,
    h("h1", {}, "Documents"),
    h("p", { class: "lead" }, "A PDF is split into snippets with page numbers, its pages are rendered, and every snippet gets an embedding, in an enrich job."),
    h("div", { class: "grid cols-2" },
      h("div", {},
        h("section", { class: "card" }, upload, watching),
        h("section", { class: "card" }, h("h2", {}, "Recent documents"), recent)),
      h("section", { class: "card" }, view)));

  let openId = null;

  async function open(id) {
    openId = id;
    const doc = await api(`/v1/documents/${encodeURIComponent(id)}`);
    if (doc.status !== "succeeded") {
      fill(view, h("h2", {}, doc.filename || fmt.shortId(id)), h("p", {}, badge(doc.status), " ", doc.error || doc.progress?.message || ""));
      return;
    }
    const search = h("form", { id: "search-form", class: "row" },
      h("input", { type: "search", name: "q", id: "q", placeholder: "search this document" }),
      h("input", { type: "number", name: "k", id: "k", min: 1, value: 5, style: "flex:0 0 70px" }),
      h("button", { type: "submit", id: "search", style: "flex:0 0 auto" }, "Search"));
    const hits = h("div", { id: "hits" });
    const images = new Map(doc.images.map((img) => [img.page, img.url]));
    const pages = [...new Set([...doc.images.map((i) => i.page), ...doc.snippets.map((s) => s.page)])].sort((a, b) => a - b);
    fill(view,
      h("h2", {}, doc.filename || `document ${fmt.shortId(doc.id)}`),
      h("div", { class: "muted small" }, `${doc.pages} page(s) · ${doc.snippets.length} snippet(s) · embeddings by ${doc.model}`),
      h("h3", {}, "Search"), search, hits,
      h("h3", {}, "Pages"),
      h("div", { id: "pages" }, pages.map((page) => h("div", { class: "doc-page", id: `page-${page}` },
        h("div", {}, images.has(page) ? h("img", { src: images.get(page), alt: `page ${page}`, loading: "lazy" }) : null,
          h("div", { class: "small muted" }, `page ${page}`)),
        h("div", {}, doc.snippets.filter((s) => s.page === page).map((s) => h("div", { class: "snippet", id: `snippet-${s.index}` },
          h("div", { class: "where" }, `#${s.index} · characters ${s.start}–${s.end}`), s.text)))))));
    onSubmit(search, async (data) => {
      const q = text(data, "q") || "";
      const result = await api(`/v1/documents/${encodeURIComponent(id)}/search?q=${encodeURIComponent(q)}&k=${data.get("k") || 5}`);
      for (const el of view.querySelectorAll(".snippet.hit")) el.classList.remove("hit");
      fill(hits, result.results.length ? h("ol", { class: "ranked hits", id: "hit-list" }, result.results.map((r, rank) => h("li", {
        onclick: () => {
          const target = view.querySelector(`#snippet-${r.index}`);
          target?.classList.add("hit");
          target?.scrollIntoView({ behavior: "smooth", block: "center" });
        } },
        h("span", { class: "rank" }, rank + 1),
        h("span", {}, r.text.length > 180 ? `${r.text.slice(0, 180)}…` : r.text, h("div", { class: "small muted" }, `page ${r.page}`)),
        h("span", { class: "score" }, `score ${fmt.number(r.score, 3)}`)))) : h("div", { class: "empty" }, "No snippets."));
      for (const r of result.results) view.querySelector(`#snippet-${r.index}`)?.classList.add("hit");
    });
  }

  async function loadRecent() {
    const page = await api(`/v1/jobs?task=${TASK}&limit=10`);
    fill(recent, page.jobs.length ? h("div", { class: "table-wrap" }, h("table", { id: "recent-table" },
      h("tbody", {}, page.jobs.map((job) => h("tr", { class: "clickable", onclick: () => open(job.id).catch((e) => status.error(e)) },
        h("td", {}, job.input?.filename || fmt.shortId(job.id)), h("td", {}, badge(job.status)), h("td", { class: "small muted" }, fmt.time(job.created_at))))))) :
      h("div", { class: "empty" }, "No documents yet."));
  }

  onSubmit(upload, async (data) => {
    const file = data.get("file");
    const form = new FormData();
    if (file && file.size) form.append("file", file, file.name); else form.append("file", new Blob([]), "empty.pdf");
    const model = text(data, "model");
    if (model) form.append("model", model);
    const job = await api("/v1/documents", { form });
    status.info(`Document ${fmt.shortId(job.id)} uploaded; enriching.`);
    const done = await watchJob(job.id, (update) => fill(watching, h("h3", {}, `${file?.name || "document"} · ${update.status}`), progress(update)),
      { signal: abort.signal });
    if (done.status !== "succeeded") throw jobError(done);
    status.ok(`Enriched ${done.result.pages} page(s) into ${done.result.snippets.length} snippet(s).`);
    await open(job.id);
    loadRecent().catch(() => {});
  });

  loadRecent().catch((err) => status.error(err));
  // Documents uploaded elsewhere show up in the list as they change.
  const stop = onJobChange((job) => { if (job.task === TASK && job.id !== openId) loadRecent().catch(() => {}); });
  return () => { abort.abort(); stop(); };
}
