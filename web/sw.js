// nopescope's service worker: serves the page from the copy the page's
// loader keeps (web/builds.sh, keepOffline), so that it opens and computes
// with no network (a classroom whose network fails, a laptop on a train).
// The loader writes the copy, one cache per build with the page's document
// last, and drops older builds' caches once a new one is whole; this
// worker only reads them.
//
// The page itself (a navigation) comes from the network when it answers
// (a new version is picked up at the next visit), the copy when it fails,
// answers with an error, or takes longer than NETWORK_WAIT_MS while a copy
// exists. Every other file has a content hash in its name, so a kept copy
// is never stale and is served first.
const NETWORK_WAIT_MS = 6000;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

// The page's key: its address without the query and fragment, which only
// carry the view's state (`?simd=plain`, `#state=...`).
function pageKey(url) {
  const u = new URL(url);
  u.search = "";
  u.hash = "";
  return u.href;
}

// The kept page: the oldest cache that has it (caches are searched in the
// order they were made), so a copy being written never answers before the
// whole one beside it.
// A cache that cannot be read (a corrupt or just-cleared store) is no copy:
// the network answers, as without the worker.
async function keptPage(url) {
  try {
    return await caches.match(pageKey(url), { ignoreVary: true });
  } catch {
    return undefined;
  }
}

async function page(request) {
  const kept = await keptPage(request.url);
  const network = fetch(request);
  if (!kept) return network;
  let timer;
  const late = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), NETWORK_WAIT_MS);
  });
  try {
    const response = await Promise.race([network, late]);
    // A redirect goes through; an error status (a proxy's 502) or no
    // answer in time gets the copy.
    if (response && (response.ok || response.type === "opaqueredirect")) return response;
    return kept;
  } catch {
    return kept;
  } finally {
    clearTimeout(timer);
  }
}

// A request that asks for the network (the loader's check of the page it
// keeps, `cache: "no-cache"`) goes there.
async function file(request) {
  if (["no-store", "no-cache", "reload"].includes(request.cache)) return fetch(request);
  let kept;
  try {
    kept = await caches.match(request, { ignoreVary: true });
  } catch {
    kept = undefined;
  }
  return kept ?? fetch(request);
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(request.mode === "navigate" ? page(request) : file(request));
});
