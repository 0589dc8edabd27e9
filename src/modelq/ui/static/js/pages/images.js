// Generate image: a text2img job (POST /generate_async), or with an init image chosen an img2img
// job (POST /v1/jobs, the image as base64), followed live; the result with its parameters; a
// gallery of past text2img and img2img jobs from the job store.

import { ApiError, api, jobError, onJobChange, watchJob } from "../api.js";
import { fill, fmt, h, num, onSubmit, progress, status, table, text } from "../ui.js";

export const title = "Generate image";
const TASKS = ["text2img", "img2img"];
const GALLERY_SIZE = 24;
/** The form's field for each img2img input field, so an error marks the right input. */
const IMG2IMG_FIELDS = { model: "modelid", steps: "num_inference_steps", guidance: "guidance_scale",
  n: "num_images_per_prompt", seed: "generator", image_b64: "image", image: "image" };

/** A file's bytes as a data: URL (the API takes it as base64). */
function dataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

export function mount(root) {
  const abort = new AbortController();
  const models = h("datalist", { id: "image-models" });
  const scheduler = h("select", { name: "scheduler", id: "scheduler" }, h("option", { value: "" }, "model default"));
  const seed = h("input", { type: "number", name: "generator", id: "seed", min: 0, placeholder: "chosen by the worker", disabled: true });
  const randomSeed = h("input", { type: "checkbox", id: "random-seed", checked: true,
    onchange: () => { seed.disabled = randomSeed.checked; if (!seed.disabled) seed.focus(); } });
  const preview = h("img", { id: "init-preview", alt: "init image", hidden: true,
    style: "max-width:96px;max-height:96px;image-rendering:pixelated;border-radius:4px" });
  const strengthRow = h("div", { id: "strength-row", hidden: true },
    h("label", { for: "strength" }, "Strength"),
    h("input", { type: "number", name: "strength", id: "strength", min: 0, max: 1, step: 0.05, value: 0.8 }),
    h("div", { class: "small muted" }, "How far to move away from the init image: 0 keeps it, 1 ignores it."));
  const initImage = h("input", { type: "file", name: "image", id: "init-image", accept: "image/png,image/jpeg,image/webp,image/gif,image/bmp",
    onchange: () => showInitImage() });
  const clearInit = h("button", { type: "button", class: "small", id: "clear-init", hidden: true,
    onclick: () => { initImage.value = ""; showInitImage(); } }, "remove");
  let previewUrl = null;
  function showInitImage() {
    const file = initImage.files[0];
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = file ? URL.createObjectURL(file) : null;
    preview.src = previewUrl || "";
    preview.hidden = strengthRow.hidden = clearInit.hidden = !file;
    for (const side of ["width", "height"]) form.querySelector(`#${side}`).placeholder = file ? "image's" : "model's";
    form.querySelector("#generate").textContent = file ? "Generate from image" : "Generate";
  }
  const form = h("form", { id: "image-form" },
    h("label", { for: "prompt" }, "Prompt"),
    h("textarea", { name: "prompt", id: "prompt", rows: 3, placeholder: "a lighthouse at sunset, oil painting" }),
    h("label", { for: "negative" }, "Negative prompt"),
    h("input", { name: "negative_prompt", id: "negative", placeholder: "blurry, low quality" }),
    h("label", { for: "init-image" }, "Init image (optional: image to image)"),
    h("div", { class: "row" }, initImage, h("div", { style: "flex:0 0 auto" }, preview, " ", clearInit)),
    strengthRow,
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
    h("p", { class: "lead" }, "Text to image with diffusers, as a queued text2img job; with an init image, image to image as an img2img job on the same model. The progress shows each step."),
    h("div", { class: "grid cols-2" },
      h("section", { class: "card" }, form),
      h("section", { class: "card" }, h("h2", {}, "Result"), current)),
    h("section", { class: "card" }, h("h2", {}, "History ", galleryCount), gallery));

  const shown = new Set();
  // Newest first, whatever order the listing and the live stream deliver jobs in (on a reload
  // the stream also replays jobs that just finished, and may do so before the listing answers).
  function addToGallery(job) {
    if (shown.has(job.id) || !job.result?.images?.length) return;
    shown.add(job.id);
    gallery.querySelector("#gallery-empty")?.remove();
    const p = job.result.parameters || {};
    const created = Date.parse(job.created_at) || 0;
    const card = h("button", { type: "button", class: "thumb", "data-job": job.id, "data-created": created,
      title: job.input?.prompt || "", onclick: () => showResult(job) },
      h("img", { src: job.result.images[0].url, alt: job.input?.prompt || "image", loading: "lazy" }),
      h("div", { class: "cap" }, job.input?.prompt || ""),
      h("div", { class: "cap muted" }, `seed ${p.seed ?? "?"} · ${p.width}×${p.height}`));
    const older = [...gallery.querySelectorAll(".thumb")].find((other) => Number(other.dataset.created) < created);
    gallery.insertBefore(card, older || null);
    galleryCount.textContent = ` · ${shown.size} image job${shown.size === 1 ? "" : "s"}`;
  }

  function showResult(job) {
    const p = job.result.parameters || {};
    const rows = [
      ["prompt", job.input?.prompt], ["negative prompt", p.negative_prompt || job.input?.negative_prompt || "–"],
      ["model", p.model], ["pipeline", p.pipeline], ["scheduler", p.scheduler || "model default"],
      ["size", `${p.width} × ${p.height}`], ["steps", p.steps], ["guidance", p.guidance ?? "–"],
      ...(job.task === "img2img" ? [["strength", `${p.strength} (${p.denoising_steps} of ${p.steps} steps run)`], ["init image", initImageLabel(p.image)]] : []),
      ["seed", h("span", { class: "mono", id: "result-seed" }, String(p.seed))], ["images", p.n],
      ["job", h("a", { href: `#/jobs?id=${job.id}` }, fmt.shortId(job.id))], ["took", fmt.duration(job)],
    ];
    fill(current,
      h("div", { class: "result-images", id: "result-images" },
        job.result.images.map((img) => h("a", { href: img.url, target: "_blank" }, h("img", { src: img.url, alt: `seed ${img.seed}` })))),
      h("h3", {}, "Parameters"),
      table(["", ""], rows.map(([k, v]) => [k, v ?? "–"]), { class: "params", id: "result-params" }));
  }

  function initImageLabel(image) {
    if (image && typeof image === "object") {
      return h("a", { href: `/v1/jobs/${image.job}/artifacts/${image.artifact}`, target: "_blank" }, `${fmt.shortId(image.job)} · ${image.artifact}`);
    }
    return "uploaded";
  }

  /** An img2img job from the form and the chosen file; answers its id. */
  async function submitImg2img(data, file) {
    const input = {
      prompt: String(data.get("prompt") || ""), negative_prompt: text(data, "negative_prompt"), model: text(data, "modelid"),
      scheduler: text(data, "scheduler"), width: num(data, "width"), height: num(data, "height"),
      steps: num(data, "num_inference_steps"), guidance: num(data, "guidance_scale"), n: num(data, "num_images_per_prompt"),
      seed: randomSeed.checked ? undefined : num(data, "generator"), strength: num(data, "strength"),
      image_b64: await dataUrl(file),
    };
    try {
      return (await api("/v1/jobs", { json: { task: "img2img", input } })).id;
    } catch (err) {
      if (err instanceof ApiError && err.field in IMG2IMG_FIELDS) err.field = IMG2IMG_FIELDS[err.field];
      throw err;
    }
  }

  onSubmit(form, async (data) => {
    const file = initImage.files[0];
    const body = {
      prompt: String(data.get("prompt") || ""), negative_prompt: text(data, "negative_prompt"), modelid: text(data, "modelid"),
      scheduler: text(data, "scheduler"), width: num(data, "width"), height: num(data, "height"),
      num_inference_steps: num(data, "num_inference_steps"), guidance_scale: num(data, "guidance_scale"),
      num_images_per_prompt: num(data, "num_images_per_prompt"),
      generator: randomSeed.checked ? undefined : num(data, "generator"),
    };
    const taskid = file ? await submitImg2img(data, file) : (await api("/generate_async", { json: body })).taskid;
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
      const [options, listing, ...pages] = await Promise.all([
        api("/ui/options.json"), api("/v1/models"),
        ...TASKS.map((task) => api(`/v1/jobs?task=${task}&status=succeeded&limit=${GALLERY_SIZE}`)),
      ]);
      const past = pages.flatMap((page) => page.jobs).sort((a, b) => Date.parse(b.created_at) - Date.parse(a.created_at))
        .slice(0, GALLERY_SIZE);
      for (const name of options.image.schedulers) scheduler.append(h("option", { value: name }, name));
      form.querySelector("#steps").max = options.image.max_steps;
      form.querySelector("#count").max = options.image.max_count;
      form.querySelector("#model").placeholder = options.image.default_model;
      form.querySelector("#strength").value = options.image.default_strength;
      for (const model of listing.data) {
        if (!model.declared || String(model.declared.loader).includes("diffusers")) models.append(h("option", { value: model.id }));
      }
      for (const job of past) addToGallery(job);
      if (!shown.size) gallery.append(h("div", { class: "empty", id: "gallery-empty" }, "No images yet."));
    } catch (err) {
      status.error(err);
    }
  })();

  // Images generated elsewhere (another tab, the API, the CLI) join the gallery as they finish.
  const stop = onJobChange(async (job) => {
    if (!TASKS.includes(job.task) || job.status !== "succeeded" || shown.has(job.id)) return;
    try {
      addToGallery(await api(`/v1/jobs/${job.id}`));
    } catch { /* gone meanwhile */ }
  });
  return () => { abort.abort(); stop(); if (previewUrl) URL.revokeObjectURL(previewUrl); };
}
