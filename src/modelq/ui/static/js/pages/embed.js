// Embed and rerank: an embed job and a rerank job, followed live; the cosine similarity of
// every pair of texts (and the query), and the documents ranked for the query.

import { api, jobError, watchJob } from "../api.js";
import { badge, fill, fmt, h, num, onSubmit, progress, status, table, text } from "../ui.js";

export const title = "Embed & rerank";

const EXAMPLE = [
  "The cat sits on the mat.",
  "A dog plays in the park.",
  "Quarterly revenue grew by ten percent.",
  "Kittens like to sleep in the sun.",
].join("\n");

function heat(value) {
  // white at 0, the accent colour at 1 (negative similarities stay white)
  const t = Math.max(0, Math.min(1, value));
  const mix = (a, b) => Math.round(a + (b - a) * t);
  return `background: rgb(${mix(255, 120)}, ${mix(255, 146)}, ${mix(255, 235)})${t > 0.7 ? "; color: #fff" : ""}`;
}

export function mount(root) {
  const abort = new AbortController();
  const form = h("form", { id: "embed-form" },
    h("label", { for: "texts" }, "Texts (one per line)"),
    h("textarea", { name: "documents", id: "texts", rows: 6 }, EXAMPLE),
    h("label", { for: "query" }, "Query"),
    h("input", { name: "query", id: "query", value: "Where is the cat?" }),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "embed-model" }, "Embedding model"), h("input", { name: "model", id: "embed-model", placeholder: "minilm" })),
      h("div", {}, h("label", { for: "rerank-model" }, "Reranker"), h("input", { name: "rerank_model", id: "rerank-model", placeholder: "bundled bi-encoder" }))),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "top-n" }, "Top n"), h("input", { type: "number", name: "top_n", id: "top-n", min: 1, placeholder: "all" })),
      h("div", { class: "spacer" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "run" }, "Embed and rerank")));

  const jobs = h("div", { id: "embed-jobs" });
  const similarity = h("div", { id: "similarity" }, h("div", { class: "empty" }, "Cosine similarities appear here."));
  const ranked = h("div", { id: "ranked" }, h("div", { class: "empty" }, "Ranked documents appear here."));
  fill(root,
    h("h1", {}, "Embed and rerank"),
    h("p", { class: "lead" }, "Sentence embeddings and reranking run as embed and rerank jobs on the gpu queue; small requests are batched."),
    h("div", { class: "grid cols-2" },
      h("section", { class: "card" }, form, jobs),
      h("div", {},
        h("section", { class: "card" }, h("h2", {}, "Ranked documents"), ranked),
        h("section", { class: "card" }, h("h2", {}, "Similarity"), similarity))));

  /** A row in the jobs table that follows one job; returns its update function. */
  function track(job) {
    const cells = (j) => [h("td", {}, `${j.task} `, h("span", { class: "mono muted" }, fmt.shortId(j.id))), h("td", {}, badge(j.status)),
      h("td", { style: "width:45%" }, progress(j))];
    const row = h("tr", {}, cells(job));
    jobs.querySelector("tbody").append(row);
    return (update) => fill(row, cells(update));
  }

  async function run(task, input) {
    const job = await api("/v1/jobs", { json: { task, input } });
    const done = await watchJob(job.id, track(job), { signal: abort.signal });
    if (done.status !== "succeeded") throw jobError(done);
    return done.result;
  }

  onSubmit(form, async (data) => {
    const documents = String(data.get("documents") || "").split("\n").map((s) => s.trim()).filter(Boolean);
    const query = String(data.get("query") || "").trim();
    fill(jobs, h("h3", {}, "Jobs"), table(["job", "status", "progress"], []));
    const model = text(data, "model");
    const rerankInput = { query, documents, model: text(data, "rerank_model"), top_n: num(data, "top_n") };
    const embedInput = { input: query ? [query, ...documents] : documents, ...(model ? { model } : {}) };
    const [embedded, reranked] = await Promise.all([run("embed", embedInput), run("rerank", rerankInput)]);
    const labels = documents.map((d, i) => ({ tag: `#${i}`, text: d }));
    showSimilarity(query ? [{ tag: "query", text: query }, ...labels] : labels, embedded);
    showRanked(documents, reranked);
    status.ok(`Embedded ${embedded.embeddings.length} texts (${embedded.dimensions} dimensions, ${embedded.model}); reranked with ${reranked.model}.`);
  });

  function showSimilarity(labels, result) {
    const vectors = result.embeddings;
    const norm = vectors.map((v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0)) || 1);
    const cos = (i, j) => vectors[i].reduce((s, x, k) => s + x * vectors[j][k], 0) / (norm[i] * norm[j]);
    const short = (s) => (s.length > 30 ? `${s.slice(0, 29)}…` : s);
    const rows = labels.map((label, i) => h("tr", {},
      h("th", { class: "rowhead", title: label.text }, h("span", { class: "muted" }, `${label.tag} `), short(label.text)),
      labels.map((_, j) => { const v = cos(i, j); return h("td", { class: "num", style: heat(v) }, v.toFixed(2)); })));
    fill(similarity, h("div", { class: "small muted" }, "Cosine similarity of the embeddings, for every pair."),
      table([{ title: "" }, ...labels.map((l) => ({ title: l.tag, attrs: { class: "num", title: l.text } }))], rows, { class: "heat", id: "similarity-table" }));
  }

  function showRanked(documents, result) {
    const scores = result.results.map((r) => r.relevance_score);
    const top = Math.max(...scores), low = Math.min(0, ...scores);
    fill(ranked, h("div", { class: "small muted" }, `model: ${result.model}`),
      h("ol", { class: "ranked", id: "ranked-list" }, result.results.map((r, rank) => h("li", {},
        h("span", { class: "rank" }, rank + 1),
        h("span", {}, documents[r.index], h("span", { class: "muted small" }, `  #${r.index}`)),
        h("span", {}, h("div", { class: "bar", style: `width:${(100 * (r.relevance_score - low) / ((top - low) || 1)).toFixed(0)}%` }),
          h("div", { class: "score" }, fmt.number(r.relevance_score, 4)))))));
  }

  return () => abort.abort();
}
