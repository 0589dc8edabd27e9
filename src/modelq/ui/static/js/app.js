// The single-page app: a page per hash route (#/images, #/jobs, ...), each a module with mount(root).

import { api, connect, setUpKeyDialog } from "./api.js";
import { status, fill } from "./ui.js";

const PAGES = {
  images: () => import("./pages/images.js"),
  embed: () => import("./pages/embed.js"),
  documents: () => import("./pages/documents.js"),
  timetable: () => import("./pages/timetable.js"),
  jobs: () => import("./pages/jobs.js"),
  cluster: () => import("./pages/cluster.js"),
};
const DEFAULT_PAGE = "images";

let unmount = null;
let generation = 0;

async function route() {
  const name = (location.hash.match(/^#\/([\w-]+)/) || [])[1];
  if (!PAGES[name]) {
    location.replace(`#/${DEFAULT_PAGE}`);
    return;
  }
  const mine = ++generation;
  if (unmount) { unmount(); unmount = null; }
  status.clear();
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.page === name);
  const root = fill(document.getElementById("page"));
  root.dataset.page = name;
  try {
    const page = await PAGES[name]();
    if (mine !== generation) return; // the user moved on meanwhile
    unmount = (await page.mount(root)) || null;
    document.title = `${page.title || name} · modelq`;
  } catch (err) {
    status.error(err);
  }
}

window.addEventListener("hashchange", route);
setUpKeyDialog();
// An API with keys answers 401 here first, and the key dialog opens before any stream is refused.
api("/v1/jobs?limit=1").then(() => connect(), (err) => { if (err.status !== 401) connect(); });
route();
