// Timetable: a .ctt file or a bundled sample, a quality mode, the island model's epochs as they
// finish, and the best timetables as grids by curriculum and by room.

import { api, jobError, watchJob } from "../api.js";
import { badge, fill, fmt, h, num, onSubmit, progress, status, table, text } from "../ui.js";

export const title = "Timetable";
const EPOCH = /^epoch (\d+)\/(\d+): best hard (\d+), soft (\d+)$/;
const DAY_NAMES = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/** The parts of an ITC-2007 .ctt file the grids need: days, periods, rooms, curricula. */
export function parseCtt(ctt) {
  const out = { days: 0, periods_per_day: 0, rooms: [], curricula: [] };
  let section = null;
  for (const raw of ctt.split("\n")) {
    const line = raw.trim();
    if (!line) { section = null; continue; }
    const header = line.match(/^(\w+):\s*(.*)$/);
    if (header && !header[2]) { section = header[1].toUpperCase(); continue; }
    if (header && header[1] === "Days") out.days = Number(header[2]);
    else if (header && header[1] === "Periods_per_day") out.periods_per_day = Number(header[2]);
    else if (section === "ROOMS") { const [id, capacity] = line.split(/\s+/); out.rooms.push({ id, capacity: Number(capacity) }); }
    else if (section === "CURRICULA") { const [id, , ...courses] = line.split(/\s+/); out.curricula.push({ id, courses }); }
  }
  return out;
}

function instanceOf(input) {
  if (input?.instance) return input.instance;
  return parseCtt(input?.ctt || "");
}

export function mount(root) {
  const abort = new AbortController();
  const sample = h("select", { name: "sample", id: "sample" });
  const mode = h("select", { name: "quality_mode", id: "quality-mode" });
  const form = h("form", { id: "timetable-form" },
    h("label", { for: "sample" }, "Problem"),
    sample,
    h("label", { for: "ctt-file" }, "…or a .ctt file (ITC-2007)"),
    h("input", { type: "file", name: "ctt_file", id: "ctt-file", accept: ".ctt,text/plain" }),
    h("label", { for: "quality-mode" }, "Quality mode"), mode,
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "variants" }, "Variants"), h("input", { type: "number", name: "variants", id: "variants", min: 1, value: 3 })),
      h("div", {}, h("label", { for: "tt-seed" }, "Seed"), h("input", { type: "number", name: "seed", id: "tt-seed", min: 0, value: 0 }))),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "org" }, "Organization"), h("input", { name: "organization_id", id: "org", value: "demo" })),
      h("div", {}, h("label", { for: "semester" }, "Semester"), h("input", { name: "semester", id: "semester", value: "1" })),
      h("div", {}, h("label", { for: "year" }, "Year"), h("input", { name: "academic_year", id: "year", value: "2024-25" }))),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary", id: "solve" }, "Generate timetables")));
  const live = h("div", { id: "tt-progress" });
  const epochs = h("div", { id: "epochs" }, h("div", { class: "empty" }, "Epochs appear here as the islands finish them."));
  const result = h("div", { id: "tt-result" }, h("div", { class: "empty" }, "The best timetable appears here."));
  fill(root,
    h("h1", {}, "Timetable"),
    h("p", { class: "lead" }, "Course timetabling (ITC-2007) by a genetic-algorithm island model: islands evolve as parallel jobs and trade their best timetables after every epoch."),
    h("div", { class: "grid cols-2" },
      h("div", {},
        h("section", { class: "card" }, form, live),
        h("section", { class: "card" }, h("h2", {}, "Epochs"), epochs)),
      h("section", { class: "card" }, result)));

  const seen = [];
  function showEpochs(rows, total) {
    const soft = rows.map((r) => r.soft);
    const max = Math.max(...soft, 1), min = Math.min(...soft, 0);
    const points = soft.map((s, i) => `${(soft.length === 1 ? 50 : (100 * i) / (soft.length - 1)).toFixed(1)},${(36 - (32 * (s - min)) / ((max - min) || 1)).toFixed(1)}`).join(" ");
    fill(epochs,
      rows.length > 1 && max > min ? h("div", { html: `<svg class="spark" viewBox="0 0 100 40" preserveAspectRatio="none"><polyline fill="none" stroke="#3558d4" stroke-width="1.5" vector-effect="non-scaling-stroke" points="${points}"/></svg>` }) : null,
      table([{ title: "epoch" }, { title: "best hard", attrs: { class: "num" } }, { title: "best soft", attrs: { class: "num" } }],
        rows.map((r) => [`${r.epoch}${total ? ` / ${total}` : ""}`, { value: r.hard, attrs: { class: "num" } }, { value: r.soft, attrs: { class: "num" } }]),
        { id: "epoch-table" }));
  }

  function showResult(job) {
    const res = job.result;
    const inst = instanceOf(job.input);
    const state = { variant: 0, by: "curriculum", which: inst.curricula[0]?.id };
    const variantSel = h("select", { id: "variant", onchange: () => { state.variant = Number(variantSel.value); draw(); } },
      res.variants.map((v, i) => h("option", { value: i }, `#${v.rank}: hard ${v.hard}, soft ${v.soft}`)));
    const whichSel = h("select", { id: "which", onchange: () => { state.which = whichSel.value; draw(); } });
    const byButtons = ["curriculum", "room"].map((by) => h("button", { type: "button", id: `by-${by}`, class: by === state.by ? "on" : "",
      onclick: () => { state.by = by; state.which = (by === "room" ? inst.rooms : inst.curricula)[0]?.id; draw(); } }, `by ${by}`));
    const grid = h("div", { id: "tt-grid" });
    const scores = h("div", { id: "tt-scores" });

    function draw() {
      byButtons.forEach((b) => b.classList.toggle("on", b.id === `by-${state.by}`));
      const options = state.by === "room" ? inst.rooms : inst.curricula;
      fill(whichSel, options.map((o) => h("option", { value: o.id, selected: o.id === state.which }, state.by === "room" ? `${o.id} (${o.capacity} seats)` : `${o.id} (${o.courses.length} courses)`)));
      const variant = res.variants[state.variant];
      const courses = state.by === "curriculum" ? new Set(inst.curricula.find((c) => c.id === state.which)?.courses || []) : null;
      const cells = new Map();
      for (const a of variant.assignments) {
        if (courses ? !courses.has(a.course) : a.room !== state.which) continue;
        const key = `${a.day}:${a.period}`;
        cells.set(key, [...(cells.get(key) || []), a]);
      }
      const days = inst.days || 5, periods = inst.periods_per_day || 4;
      fill(grid, h("table", { class: "tt", id: "tt-table" },
        h("thead", {}, h("tr", {}, h("th", { class: "period" }, ""), Array.from({ length: days }, (_, d) => h("th", {}, DAY_NAMES[d] || `day ${d}`)))),
        h("tbody", {}, Array.from({ length: periods }, (_, p) => h("tr", {}, h("th", { class: "period" }, `P${p}`),
          Array.from({ length: days }, (_, d) => {
            const here = cells.get(`${d}:${p}`) || [];
            return h("td", {}, here.map((a) => h("span", { class: `lec${here.length > 1 && courses ? " clash" : ""}`, title: `${a.course} lecture ${a.lecture} in ${a.room}` },
              a.course, h("small", {}, state.by === "curriculum" ? a.room : "")))) ;
          }))))));
      const named = (o) => Object.entries(o || {}).map(([k, v]) => `${k.replaceAll("_", " ")} ${v}`).join(" · ") || "none";
      fill(scores, h("div", { class: "small" }, h("b", {}, "hard: "), named(variant.hard_violations)),
        h("div", { class: "small" }, h("b", {}, "soft: "), named(variant.soft_penalties)));
    }

    fill(result,
      h("h2", {}, "Best timetables ", res.best.feasible ? badge("feasible", "yes") : badge("infeasible", "failed")),
      h("div", { class: "stats" },
        h("div", { class: "stat" }, h("div", { class: "n", id: "best-hard" }, res.best.hard), h("div", { class: "l" }, "hard violations")),
        h("div", { class: "stat" }, h("div", { class: "n", id: "best-soft" }, res.best.soft), h("div", { class: "l" }, "soft penalty")),
        h("div", { class: "stat" }, h("div", { class: "n" }, res.evaluations.toLocaleString()), h("div", { class: "l" }, "evaluations")),
        h("div", { class: "stat" }, h("div", { class: "n" }, `${res.settings.islands} × ${res.settings.epochs}`), h("div", { class: "l" }, "islands × epochs"))),
      h("div", { class: "row" }, h("div", {}, h("label", { for: "variant" }, "Variant"), variantSel),
        h("div", {}, h("label", {}, "View"), h("div", { class: "seg" }, byButtons)),
        h("div", {}, h("label", { for: "which" }, "Showing"), whichSel)),
      h("div", { style: "margin-top:12px" }, grid), scores,
      h("div", { class: "small muted", style: "margin-top:8px" }, `${res.instance.name || "instance"}: ${res.instance.courses} courses, ${res.instance.lectures} lectures, ${res.instance.rooms} rooms, ${res.instance.curricula} curricula · job ${fmt.shortId(job.id)} took ${fmt.duration(job)}`));
    draw();
  }

  onSubmit(form, async (data) => {
    const file = data.get("ctt_file");
    const ctt = file && file.size ? await file.text() : await api(`/ui/samples/${encodeURIComponent(data.get("sample"))}.ctt`);
    const semester = text(data, "semester");
    const body = {
      organization_id: text(data, "organization_id") || "", academic_year: text(data, "academic_year") || "",
      semester: /^\d+$/.test(semester || "") ? Number(semester) : semester ?? "",
      quality_mode: data.get("quality_mode"), variants: num(data, "variants"), seed: num(data, "seed"), ctt,
    };
    const job = await api("/api/generate_variants", { json: body });
    status.info(`Timetable job ${fmt.shortId(job.id)} queued (${body.quality_mode}).`);
    seen.length = 0;
    fill(epochs, h("div", { class: "empty" }, "Waiting for the first epoch…"));
    const done = await watchJob(job.id, (update) => {
      fill(live, h("h3", {}, update.status), progress(update));
      const m = (update.progress?.message || "").match(EPOCH);
      if (m && !seen.some((r) => r.epoch === Number(m[1]))) {
        seen.push({ epoch: Number(m[1]), hard: Number(m[3]), soft: Number(m[4]) });
        showEpochs(seen, Number(m[2]));
      }
    }, { signal: abort.signal });
    if (done.status !== "succeeded") throw jobError(done);
    showEpochs(done.result.history, done.result.settings.epochs);
    status.ok(`Done: best hard ${done.result.best.hard}, soft ${done.result.best.soft}; ${done.result.variants.length} variant(s).`);
    showResult(done);
  });

  api("/ui/options.json").then((options) => {
    for (const name of options.timetable.samples) sample.append(h("option", { value: name }, `sample: ${name}`));
    for (const [name, s] of Object.entries(options.timetable.quality_modes)) {
      mode.append(h("option", { value: name, selected: name === options.timetable.default_quality_mode },
        `${name} (${s.islands} islands, ${s.epochs} epochs × ${s.generations} generations)`));
    }
  }).catch((err) => status.error(err));

  return () => abort.abort();
}
