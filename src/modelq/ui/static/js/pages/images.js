// Generate image: a text2img job (POST /generate_async), followed live; the result with its
// parameters; a gallery of past text2img jobs from the job store.

import { api, jobError, onJobChange, watchJob } from "../api.js";
import { fill, fmt, h, num, onSubmit, progress, status, table, text } from "../ui.js";

export const title = "Generate image";
const TASK = "text2img";
const GALLERY_SIZE = 24;

export function mount(root) {
  const abort = new AbortController();
  const models = h("datalist", { id: "image-models" });
  const scheduler = h("select", { name: "scheduler", id: "scheduler" }, h("option", { value: "" }, "model default"));
  const seed = h("input", { type: "number", name: "generator", id: "seed", min: 0, placeholder: "chosen by the worker", disabled: true });
  const randomSeed = h("input", { type: "checkbox", id: "random-seed", checked: true,
    onchange: () => { seed.disabled = randomSeed.checked; if (!seed.disabled) seed.focus(); } });
  const form = h("form", { id: "image-form" },
    h("label", { for: "prompt" }, "Prompt"),
    h("textarea", { name: "prompt", id: "prompt", rows: 3, placeholder: "a lighthouse at sunset, oil painting" }),
    h("label", { for: "negative" }, "Negative prompt"),
    h("input", { name: "negative_prompt", id: "negative", placeholder: "blurry, low quality" }),
    h("label", { for: "model" }, "Model"),
    h("input", { name: "modelid", id: "model", list: "image-models", placeholder: "default model" }), models,
    h("label", { for: "scheduler" }, "Scheduler"), scheduler,
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "width" }, "Width"), h("input", { type: "number", name: "width", id: "width", step: 8, placeholder: "model's" })),
      h("div", {}, h("label", { for: "height" }, "Height"), h("input", { type: "number", name: "height", id: "height", step: 8, placeholder: "model's" }))),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "steps" }, "Steps"), h("input", { type: "number", name: "num_inference_steps", id: "steps", min: 1, value: 30 })),
      h("div", {}, h("label", { for: "guidance" }, "Guidance"), h("input", { type: "number", name: "guidance_scale", id: "guidance", min: 0, step: 0.5, value: 7.5 })),
      h("div", {}, h("label", { for: "count" }, "Images"), h("input", { type: "number", name: "num_images_per_prompt", id: "count", min: 1, value: 1 }))),
    h("label", { for: "seed" }, "Seed"),
    h("div", { class: "row" }, seed, h("label", { class: "inline", style: "flex:0 0 auto" }, randomSeed, "random seed")),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "generate" }, "Generate")));

  const current = h("div", { id: "current" }, h("div", { class: "empty" }, "Your image appears here."));
  const gallery = h("div", { class: "gallery", id: "gallery" });
  const galleryCount = h("span", { class: "muted small" });
  fill(root,
    h("h1", {}, "Generate image"),
    h("p", { class: "lead" }, "Text to image with diffusers, as a queued text2img job: the progress shows each step."),
    h("div", { class: "grid cols-2" },
      h("section", { class: "card" }, form),
      h("section", { class: "card" }, h("h2", {}, "Result"), current)),
    h("section", { class: "card" }, h("h2", {}, "History ", galleryCount), gallery));

  const shown = new Set();
  function addToGallery(job, { first = true } = {}) {
    if (shown.has(job.id) || !job.result?.images?.length) return;
    shown.add(job.id);
    const p = job.result.parameters || {};
    const card = h("button", { type: "button", class: "thumb", "data-job": job.id, title: job.input?.prompt || "",
      onclick: () => showResult(job) },
      h("img", { src: job.result.images[0].url, alt: job.input?.prompt || "image", loading: "lazy" }),
      h("div", { class: "cap" }, job.input?.prompt || ""),
      h("div", { class: "cap muted" }, `seed ${p.seed ?? "?"} · ${p.width}×${p.height}`));
    if (first) gallery.prepend(card); else gallery.append(card);
    galleryCount.textContent = ` · ${shown.size} image job${shown.size === 1 ? "" : "s"}`;
  }

  function showResult(job) {
    const p = job.result.parameters || {};
    const rows = [
      ["prompt", job.input?.prompt], ["negative prompt", p.negative_prompt || job.input?.negative_prompt || "–"],
      ["model", p.model], ["pipeline", p.pipeline], ["scheduler", p.scheduler || "model default"],
      ["size", `${p.width} × ${p.height}`], ["steps", p.steps], ["guidance", p.guidance ?? "–"],
      ["seed", h("span", { class: "mono", id: "result-seed" }, String(p.seed))], ["images", p.n],
      ["job", h("a", { href: `#/jobs?id=${job.id}` }, fmt.shortId(job.id))], ["took", fmt.duration(job)],
    ];
    fill(current,
      h("div", { class: "result-images", id: "result-images" },
        job.result.images.map((img) => h("a", { href: img.url, target: "_blank" }, h("img", { src: img.url, alt: `seed ${img.seed}` })))),
      h("h3", {}, "Parameters"),
      table(["", ""], rows.map(([k, v]) => [k, v ?? "–"]), { class: "params", id: "result-params" }));
  }

  onSubmit(form, async (data) => {
    const body = {
      prompt: String(data.get("prompt") || ""), negative_prompt: text(data, "negative_prompt"), modelid: text(data, "modelid"),
      scheduler: text(data, "scheduler"), width: num(data, "width"), height: num(data, "height"),
      num_inference_steps: num(data, "num_inference_steps"), guidance_scale: num(data, "guidance_scale"),
      num_images_per_prompt: num(data, "num_images_per_prompt"),
      generator: randomSeed.checked ? undefined : num(data, "generator"),
    };
    const { taskid } = await api("/generate_async", { json: body });
    status.info(`Job ${fmt.shortId(taskid)} queued.`);
    const job = await watchJob(taskid, (update) => {
      fill(current, h("div", { class: "muted", id: "job-state" }, `${update.status}${update.queue_position ? ` · #${update.queue_position} in queue` : ""}`),
        progress(update));
    }, { signal: abort.signal });
    if (job.status !== "succeeded") throw jobError(job);
    status.ok(`Done: ${job.result.images.length} image(s), seed ${job.result.parameters.seed}.`);
    showResult(job);
    addToGallery(job);
  });

  (async () => {
    try {
      const [options, listing, past] = await Promise.all([
        api("/ui/options.json"), api("/v1/models"),
        api(`/v1/jobs?task=${TASK}&status=succeeded&limit=${GALLERY_SIZE}`),
      ]);
      for (const name of options.image.schedulers) scheduler.append(h("option", { value: name }, name));
      form.querySelector("#steps").max = options.image.max_steps;
      form.querySelector("#count").max = options.image.max_count;
      form.querySelector("#model").placeholder = options.image.default_model;
      for (const model of listing.data) {
        if (!model.declared || String(model.declared.loader).includes("diffusers")) models.append(h("option", { value: model.id }));
      }
      for (const job of past.jobs) addToGallery(job, { first: false });
      if (!past.jobs.length) gallery.append(h("div", { class: "empty", id: "gallery-empty" }, "No images yet."));
    } catch (err) {
      status.error(err);
    }
  })();

  // Images generated elsewhere (another tab, the API, the CLI) join the gallery as they finish.
  const stop = onJobChange(async (job) => {
    if (job.task !== TASK || job.status !== "succeeded" || shown.has(job.id)) return;
    try {
      addToGallery(await api(`/v1/jobs/${job.id}`));
      gallery.querySelector("#gallery-empty")?.remove();
    } catch { /* gone meanwhile */ }
  });
  return () => { abort.abort(); stop(); };
}
