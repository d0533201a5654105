// nopescope's service worker: keeps a copy of the page in the browser, so
// that it opens and computes with no network (a classroom whose network
// fails, a laptop on a train). The page's loader (web/builds.sh) registers
// it and, after every start, sends the list of files that start used; this
// worker keeps exactly those (the page, its loader's build, its style) and
// forgets files of earlier builds.
//
// The page itself (a navigation) comes from the network whenever there is
// one, so a new version is picked up at the next visit; its copy is the
// fallback. Every other file has a content hash in its name, so a kept copy
// is never stale and is served first.
const CACHE = "nopescope-page";

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

async function page(request) {
  const key = pageKey(request.url);
  try {
    const response = await fetch(request);
    if (response.ok) {
      const cache = await caches.open(CACHE);
      await cache.put(key, response.clone());
    }
    return response;
  } catch (err) {
    const kept = await caches.match(key);
    if (kept) return kept;
    throw err;
  }
}

async function file(request) {
  const kept = await caches.match(request);
  return kept ?? fetch(request);
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || new URL(request.url).origin !== self.location.origin) return;
  event.respondWith(request.mode === "navigate" ? page(request) : file(request));
});

// `{ keep: [url, ...] }` from the loader, with a port for the answer:
// `{ kept, missing }` (counts; a file that could not be fetched is missing).
async function keep(urls) {
  const cache = await caches.open(CACHE);
  const wanted = new Set(
    urls.filter((u) => new URL(u).origin === self.location.origin).map((u) => new URL(u).href),
  );
  wanted.delete(new URL("sw.js", self.location.href).href);
  const results = await Promise.allSettled(
    [...wanted].map(async (u) => {
      if (!(await cache.match(u))) await cache.add(u);
    }),
  );
  for (const request of await cache.keys()) {
    if (!wanted.has(request.url)) await cache.delete(request);
  }
  const missing = results.filter((r) => r.status === "rejected").length;
  return { kept: wanted.size - missing, missing };
}

self.addEventListener("message", (event) => {
  const urls = event.data?.keep;
  const port = event.ports[0];
  if (!Array.isArray(urls) || !port) return;
  event.waitUntil(
    keep(urls).then(
      (answer) => port.postMessage(answer),
      (err) => port.postMessage({ error: String(err) }),
    ),
  );
});
