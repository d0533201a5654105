// End-to-end test of the built web page (dist/, from `trunk build
// --release`) in headless Chromium: real WebGPU on SwiftShader, then with
// WebGPU off (eframe draws with WebGL2 and the app computes on the CPU
// engine). Reads the app through its test hook (nopescope_status) and
// checks screenshots are not blank. Fails loudly: any failed check exits 1.
//
//   node web/e2e/e2e.mjs [dist dir] [screenshot dir]
//   MEASURE=1 node web/e2e/e2e.mjs dist     # also the timings of docs/APP.md, BENCH.md
//   MEASURE=only node web/e2e/e2e.mjs dist  # the timings alone
//   MEASURE=text node web/e2e/e2e.mjs dist  # a frame's time with a long text alone
import { chromium } from "playwright-core";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";

const dist = path.resolve(process.argv[2] ?? "dist");
const shots = path.resolve(process.argv[3] ?? "target/e2e");
fs.mkdirSync(shots, { recursive: true });

const TYPES = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".wasm": "application/wasm",
  ".css": "text/css",
  ".png": "image/png",
  ".json": "application/json",
};

// A static file server on 127.0.0.1 (a secure context: WebGPU is offered),
// cross-origin isolated as web/serve.sh's (the page may use shared memory)
// unless the page's URL has `isolated=0`.
const ISOLATION = { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp" };
function serve(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  const headers = url.searchParams.get("isolated") === "0" ? {} : ISOLATION;
  let file = path.join(dist, decodeURIComponent(url.pathname));
  if (!file.startsWith(dist)) {
    res.writeHead(403).end();
    return;
  }
  if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, "index.html");
  fs.readFile(file, (err, body) => {
    if (err) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { ...headers, "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
    res.end(body);
  });
}
// A server on its own port; resolves to its base URL.
async function listen(server) {
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return `http://127.0.0.1:${server.address().port}/`;
}
const server = http.createServer(serve);
const base = await listen(server);

const COMMON = [
  "--no-sandbox",
  "--disable-gpu-sandbox",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const WEBGPU = ["--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader", "--use-angle=swiftshader"];
const NO_WEBGPU = ["--disable-features=WebGPU", "--use-angle=swiftshader"];

let failures = 0;
function check(cond, what) {
  console.log(`${cond ? "ok  " : "FAIL"} ${what}`);
  if (!cond) failures++;
}

async function status(page) {
  return page.evaluate(() => {
    const f = window.nopescope_status || (window.wasmBindings && window.wasmBindings.nopescope_status);
    return f ? JSON.parse(f() || "null") : null;
  });
}

// Until the Explore page's entropy at `wantLength` is there, or (null: a
// page opened on another tab, where it is not computed) the page's work is
// done.
async function waitReady(page, wantLength, timeoutMs) {
  const t0 = Date.now();
  for (;;) {
    const s = await status(page).catch(() => null);
    if (s && wantLength === null && s.idle && s.engine) return s;
    if (s && s.entropy && s.entropy.length === wantLength) return s;
    if (Date.now() - t0 > timeoutMs) return s;
    await page.waitForTimeout(250);
  }
}

// Distinct colours in a screenshot, counted in the page (no image library).
async function distinctColours(page, png) {
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = "data:image/png;base64," + b64;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4 * 7) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return seen.size;
  }, png.toString("base64"));
}

// Polls the hook until `pred(status)` holds (or the time is up).
async function waitFor(page, pred, timeoutMs) {
  const t0 = Date.now();
  for (;;) {
    const s = await status(page).catch(() => null);
    if (s && pred(s)) return s;
    if (Date.now() - t0 > timeoutMs) return s;
    await page.waitForTimeout(250);
  }
}

// Drops a file named `name` holding `body` on the page's canvas, as a
// drag from the desktop does.
async function dropFile(page, name, body, type) {
  await page.evaluate(([name, body, type]) => {
    const c = document.getElementById("nopescope_canvas");
    const dt = new DataTransfer();
    dt.items.add(new File([body], name, { type }));
    for (const kind of ["dragenter", "dragover", "drop"]) {
      c.dispatchEvent(new DragEvent(kind, { dataTransfer: dt, bubbles: true, cancelable: true }));
    }
  }, [name, body, type]);
}

async function run(label, flags, hash, wantLength, wantEngine, more, device = {}) {
  const userDir = fs.mkdtempSync("/tmp/nopescope-chromium-");
  // `device.block`: URLs the page may not load (a network error);
  // `device.from`: another server's base URL; `device.onPage`: what to do
  // with the page before its start is awaited.
  const { block, from, onPage, ...launch } = device;
  const ctx = await chromium.launchPersistentContext(userDir, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [...COMMON, ...flags],
    viewport: { width: 1280, height: 900 },
    ...launch,
  });
  const page = ctx.pages()[0] ?? (await ctx.newPage());
  if (block) await page.route(block, (r) => r.abort());
  page.on("console", (m) => {
    if (m.type() === "error") console.log(`  [console] ${m.text()}`);
  });
  // Every file the page asks for must exist (a 404 is a broken build).
  page.on("response", (r) => {
    if (r.status() >= 400) check(false, `${label}: ${r.url()} answered ${r.status()}`);
  });
  const t0 = Date.now();
  // (With `onPage`, not awaiting the page's load: the page may hold it.)
  await page.goto((from ?? base) + hash, { waitUntil: onPage ? "commit" : "load" });
  if (onPage) await onPage(page);
  const s = await waitReady(page, wantLength, 240_000);
  const seconds = (Date.now() - t0) / 1000;
  if (wantLength === null) {
    check(s && s.idle && s.engine, `${label}: the page's work done (${seconds.toFixed(1)} s)`);
    check(s && s.entropy === null, `${label}: the Explore page's entropy was not computed on the ${s?.state?.tab} page`);
  } else {
    check(s && s.entropy && s.entropy.length === wantLength, `${label}: first entropy plot at length ${wantLength} (${seconds.toFixed(1)} s)`);
  }
  if (s) {
    console.log(`  engine: ${s.engine}`);
    console.log(`  app: first plot ${s.first_plot_s?.toFixed?.(2)} s after start; frames while busy: ${s.busy_frames}, mean ${s.busy_mean_ms?.toFixed?.(1)} ms, max ${s.busy_max_ms?.toFixed?.(1)} ms; the computations held the page's thread at most ${s.held_max_ms?.toFixed?.(1)} ms at a time`);
    check(wantEngine.test(s.engine), `${label}: engine ${wantEngine}`);
    if (wantLength !== null) check(s.entropy && s.entropy.mean_bits > 0, `${label}: mean entropy ${s.entropy?.mean_bits}`);
  }
  if (more) await more(page, s);
  await page.waitForTimeout(500);
  const png = await page.screenshot();
  fs.writeFileSync(path.join(shots, `${label}.png`), png);
  const colours = await distinctColours(page, png);
  check(colours > 20, `${label}: screenshot is not blank (${colours} colours)`);
  const title = await page.title();
  await ctx.close();
  fs.rmSync(userDir, { recursive: true, force: true });
  return { s, seconds, title };
}

// MEASURE=only: the measurements alone, without the checks before them.
const ONLY_MEASURE = process.env.MEASURE === "only" || process.env.MEASURE === "text";
try {
  if (!ONLY_MEASURE) {
    // 1. The page as a newcomer opens it: WebGPU on, default view. Chromium
    // validates relaxed SIMD and the page is cross-origin isolated, so the
    // loader (web/builds.sh) picks the build with threads: one worker per
    // processor beyond the page's own.
    const first = await run("webgpu-default", WEBGPU, "", 1024, /cpu \(\d+ threads?, wasm SIMD, fused multiply-add\).*Web Worker/, async (page, s) => {
      const processors = await page.evaluate(() => navigator.hardwareConcurrency);
      const threads = Number(/cpu \((\d+) thread/.exec(s?.engine ?? "")?.[1]);
      check(threads === Math.min(processors, 16), `the CPU engine runs on ${threads} threads, ${processors} processors`);
      // The loader counted the module's download on the page, and took its
      // message away once the app started.
      const [loaded, message, glue] = await page.evaluate(() => [
        globalThis.nopescopeLoader?.loaded,
        document.getElementById("nopescope_loading")?.textContent ?? null,
        globalThis.nopescopeLoader?.glue,
      ]);
      const wasm = path.join(dist, decodeURIComponent(new URL(glue).pathname).replace(/\.js$/, "_bg.wasm"));
      const size = fs.statSync(wasm).size;
      check(loaded === size && message === null, `the loader counted the module's ${size} bytes (${loaded}) and removed its message (${message})`);
    });
    check(first.s && first.s.state.length === 1024, "default state length 1024");
    // No head chosen yet: the page selected the one whose curve closes in
    // most on the ceiling past L, not layer 0, head 0 (along the ceiling).
    const h0 = first.s?.state ?? {};
    check(h0.head_chosen === false && (h0.layer !== 0 || h0.head !== 0), `the default page selected a telling head for you: layer ${h0.layer}, head ${h0.head}`);
    // 2. A URL with state opens that view.
    const want = { length: 300, layer: 1, head: 2, input: "passkey" };
    const hash = "#state=" + encodeURIComponent(JSON.stringify(want));
    const linked = await run("webgpu-url-state", WEBGPU, hash, 300, /cpu/, async (page) => {
      // A link pasted into the same tab changes only the fragment: the
      // view follows it.
      const bytes = Number(process.env.TEXT_BYTES ?? 1e6);
      await page.evaluate((bytes) => { location.hash = "#state=" + encodeURIComponent(JSON.stringify({ length: 300, layer: 1, head: 3, input: "passkey" })); });
      const s = await waitFor(page, (x) => x.state && x.state.head === 3, 20_000);
      check(s?.state?.head === 3 && s.state.length === 300, `a new fragment in the same tab is applied (head ${s?.state?.head})`);
      await page.evaluate(() => { location.hash = "#state=" + encodeURIComponent(JSON.stringify({ length: 300, layer: 1, head: 2, input: "passkey" })); });
      await waitFor(page, (x) => x.state && x.state.head === 2, 20_000);
    });
    const st = linked.s?.state ?? {};
    check(st.length === 300 && st.layer === 1 && st.head === 2 && st.input === "passkey", `URL state restored: ${JSON.stringify({ length: st.length, layer: st.layer, head: st.head, input: st.input })}`);
    // The Share panel's link: this page's address and only what differs
    // from the default state.
    const link = linked.s?.link ?? "";
    const shared = link.startsWith(base + "#state=") ? JSON.parse(decodeURIComponent(link.slice((base + "#state=").length))) : null;
    check(shared && shared.length === 300 && shared.layer === 1 && shared.head === 2 && shared.input === "passkey" && !("model" in shared), `the share link is this page's address with the view's changes: ${link}`);
    // 3. A walkthrough step opened from its link, as a course page embeds
    // it (the page bar and status bar hidden): the step's view is set and
    // what the step promises holds on the page's own results.
    // A light course page asks for the light theme: the page under the
    // canvas and the app both turn light.
    await run("webgpu-tour-step-3", WEBGPU, "#step=3&hide=pages,status&theme=light", 1024, /cpu/, async (page, s0) => {
      const s = await waitFor(page, (x) => x.tour && x.tour.promise !== "pending", 120_000);
      const t = s?.tour ?? {};
      check(t.step === 3 && s.state.hide.includes("status"), `walkthrough step ${t.step} "${t.title}", hidden ${JSON.stringify(s?.state?.hide)}`);
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      check(s.state.theme === "light" && bg === "rgb(248, 248, 248)", `theme=light: the app's ${s.state.theme}, the page's background ${bg}`);
      check(t.promise === "met", `step 3's promise holds: ${t.promise}: ${t.detail}`);
      // A presentation clicker's Page Down steps on.
      await page.focus("canvas").catch(() => {});
      await page.keyboard.press("PageDown");
      const s4 = await waitFor(page, (x) => x.tour && x.tour.step === 4, 20_000);
      check(s4?.tour?.step === 4, `Page Down (a presentation clicker) steps the walkthrough on: step ${s4?.tour?.step}`);
      // A link with a misspelt panel: the rest applies, and the page says
      // what it left out (above the page: its bars are hidden).
      await page.evaluate(() => { location.hash = "#step=3&hide=pages,stauts"; });
      const sb = await waitFor(page, (x) => x.link_note, 20_000);
      check(sb?.link_note?.includes("stauts") && sb.tour?.step === 3 && sb.state.hide.join() === "pages", `a link read in part says what it left out: ${sb?.link_note}; hidden ${JSON.stringify(sb?.state?.hide)}`);
      // A value out of range is brought into range, and the note says so;
      // a script's state clears the note of the link before it.
      await page.evaluate(() => { location.hash = "#state=%7B%22length%22%3A3%7D"; });
      const sr = await waitFor(page, (x) => x.link_note?.includes("length 3"), 20_000);
      check(sr?.state?.length === 16 && sr.link_note.includes("16 used"), `a link's length 3 opens at 16, and the note says so: ${sr?.link_note}; length ${sr?.state?.length}`);
      await page.evaluate(() => window.nopescope_set_state(JSON.stringify({ length: 64 })));
      const sc = await waitFor(page, (x) => x.state.length === 64, 20_000);
      check(sc && !sc.link_note, `a script's state clears the link's note: ${sc?.link_note}`);
    });
    // 4. Walkthrough step 2 (the pass-key lab) promises the model answers
    // with the key at L; then step 8, which has the class run a search: a
    // short one here, whose loss must go down and which keeps the step's
    // promise.
    const small = { tune: { length: 512, steps: 6, batch: 2 } };
    await run("webgpu-lab-and-search", WEBGPU, "#step=2", null, /cpu/, async (page) => {
      const s2 = await waitFor(page, (x) => x.tour && x.tour.promise !== "pending", 120_000);
      check(s2?.tour?.step === 2 && s2.tour.promise === "met", `step 2's promise holds: ${s2?.tour?.promise}: ${s2?.tour?.detail}`);
      await page.evaluate(() => { location.hash = "#step=8"; });
      const s8 = await waitFor(page, (x) => x.tour && x.tour.step === 8 && x.state.tab === "tune", 20_000);
      check(s8?.tour?.promise === "pending" && s8.state.tune.length === 512, `step 8 opens the Tune page at 2L, waiting for its search: ${s8?.tour?.promise}, ${s8?.state?.tune?.length} tokens`);
      await page.evaluate((st) => window.nopescope_set_state(JSON.stringify({ ...window.nopescope_status && JSON.parse(window.nopescope_status()).state, ...st })), small);
      await page.waitForTimeout(500);
      await page.evaluate(() => window.nopescope_start_search());
      const t0 = Date.now();
      const s = await waitFor(page, (x) => x.search && x.search.finished, 240_000);
      const losses = s?.search?.losses ?? [];
      console.log(`  search: ${losses.length} steps in ${((Date.now() - t0) / 1000).toFixed(1)} s, losses ${losses.map((x) => x.toFixed(3)).join(" ")}; the page's thread held at most ${s?.held_max_ms?.toFixed?.(1)} ms at a time`);
      const first = losses.slice(0, 2).reduce((a, b) => a + b, 0) / Math.max(1, Math.min(2, losses.length));
      const last = losses.slice(-2).reduce((a, b) => a + b, 0) / Math.max(1, Math.min(2, losses.length));
      check(losses.length === 6 && last < first, `the search in the page ran 6 steps and its loss went down (${first.toFixed(3)} -> ${last.toFixed(3)})`);
      const met = await waitFor(page, (x) => x.tour && x.tour.promise !== "pending", 10_000);
      check(met?.tour?.step === 8 && met.tour.promise === "met", `step 8's promise holds on the page's own search: ${met?.tour?.promise}: ${met?.tour?.detail}`);
    });
    // 5. A tablet in portrait, with touch: a swipe scrolls the page, the
    // panels stack, and tapping a cell of the layer x head map selects
    // that head. (The entropy plot, which stands over the map in one
    // column, is hidden as an embedding may hide it: the map is then on
    // the first screen.)
    const TABLET = { viewport: { width: 820, height: 1180 }, hasTouch: true, isMobile: true, deviceScaleFactor: 2 };
    const tablet = await run("tablet-touch", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256, hide: ["entropy"] })), 256, /cpu/, async (page, s0) => {
      // Every view computed, then the cells where the next frames draw them.
      await waitFor(page, (x) => x.idle && x.head_cells && x.head_cells.length === 16, 60_000);
      await page.waitForTimeout(500);
      // The first swipe up scrolls the page (egui lets a drag scroll only
      // once it has seen a touch; the app tells it at its start), and a
      // swipe down brings it back. At the page's right, clear of its
      // controls and of the scroll bar; in points, as the app lays out.
      const first = await waitFor(page, (x) => x.head_cells && x.head_cells.length === 16, 30_000);
      const cssPerPoint = first.pixels_per_point / first.device_pixel_ratio;
      const [pageW, pageH] = first.screen_points;
      const cdp = await page.context().newCDPSession(page);
      const at = (y) => [{ x: (pageW - 30) * cssPerPoint, y: y * pageH * cssPerPoint }];
      const swipe = async (from, to) => {
        await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: at(from) });
        for (let i = 1; i <= 12; i++) {
          await cdp.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: at(from + ((to - from) * i) / 12) });
          await page.waitForTimeout(20);
        }
        await cdp.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
      };
      const top = first.head_cells[0][3];
      await swipe(0.7, 0.4);
      const up = await waitFor(page, (x) => x.head_cells?.[0]?.[3] < top - 50, 10_000);
      check(up && up.head_cells[0][3] < top - 50, `the first swipe up scrolled the page: the map's first cell went from y = ${top} to ${up?.head_cells?.[0]?.[3]}`);
      await swipe(0.3, 0.9);
      // (Past the top the page springs back: wait until it is at rest.)
      const back = await waitFor(page, (x) => Math.abs(x.head_cells?.[0]?.[3] - top) <= 1, 10_000);
      check(back && Math.abs(back.head_cells[0][3] - top) <= 1, `a swipe down scrolled it back: the cell at y = ${back?.head_cells?.[0]?.[3]}`);
      await page.waitForTimeout(500);
      const s = await waitFor(page, (x) => x.head_cells && x.head_cells.length === 16, 30_000);
      check(s && s.screen_points && s.screen_points[0] < 980, `the page is ${s?.screen_points?.[0]} points wide: the panels stack`);
      const canvas = await page.evaluate(() => { const c = document.getElementById("nopescope_canvas"); return [c.clientWidth, c.width, window.devicePixelRatio, window.innerWidth]; });
      console.log(`  canvas CSS width, backing width, devicePixelRatio, innerWidth: ${canvas}; egui pixels per point ${s?.pixels_per_point}, zoom ${s?.zoom_factor}`);
      // A cell on screen that is not the selected head.
      const cell = (s?.head_cells ?? []).find(([l, h, , y]) => (l !== s.state.layer || h !== s.state.head) && y > 40 && y < 1140);
      check(!!cell, `a head map cell is on screen to tap (${JSON.stringify(cell)})`);
      if (!cell) return;
      const [l, h, x, y] = cell;
      await page.touchscreen.tap(x, y);
      const after = await waitFor(page, (x) => x.state.layer === l && x.state.head === h, 10_000);
      check(after && after.state.layer === l && after.state.head === h, `a tap on layer ${l}, head ${h} selected it (now ${after?.state.layer}, ${after?.state.head})`);
      // A text file dropped on the page becomes "your text" (a file's
      // name tells a text, a scales file and a model apart).
      const words = "Four score and seven years ago our fathers brought forth on this continent a new nation. ".repeat(4);
      await dropFile(page, "speech.txt", words, "text/plain");
      const dropped = await waitFor(page, (x) => x.state.input === "pasted", 20_000);
      check(dropped && dropped.state.input === "pasted" && dropped.state.pasted_text === words,
        `a dropped speech.txt became your text (input ${dropped?.state.input}, ${dropped?.state.pasted_text?.length} characters)`);
      // A head-scales file dropped on the page becomes the scales in use.
      const row = "[1.25, 1.25, 1.25, 1.25]";
      const scales = `{"head_scales": [${row}, ${row}, ${row}, ${row}]}`;
      await dropFile(page, "my_scales.json", scales, "application/json");
      const used = await waitFor(page, (x) => x.state.scales && x.state.scales.use_file, 20_000);
      const values = used?.state?.scales?.file?.values ?? [];
      check(values.length === 16 && values.every((v) => v === 1.25),
        `a dropped my_scales.json became the scales in use (${values.length} scales, use_file ${used?.state?.scales?.use_file})`);
    }, TABLET);
    // 5b. The GPU engine in the threads build (WebGPU on the shared memory,
    // as a laptop with a GPU gets it): it computes what the CPU engine did
    // at 256 tokens in scenario 5.
    await run("threads-gpu-engine", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256, backend: "gpu" })), 256, /^gpu/, async (page, s) => {
      check(/^gpu \(\S/.test(s?.engine ?? ""), `the GPU engine's name names its adapter: ${s?.engine}`);
      const a = tablet.s?.entropy?.mean_bits, b = s?.entropy?.mean_bits;
      check(Math.abs(a - b) <= 1e-3 * Math.abs(a), `the GPU engine (threads build) and the CPU engine agree on the mean entropy at 256: ${b} vs ${a}`);
    });
    // 6. WebGPU off: WebGL2 drawing, the CPU engine computes; `?simd=plain`
    // loads the plain SIMD build, as a browser without relaxed SIMD would.
    await run("webgl-fallback", NO_WEBGPU, "?simd=plain", 1024, /cpu \(1 thread, wasm SIMD\).*as the page's address asks/);
    // 7. The threads and relaxed-SIMD builds cannot be fetched: the loader
    // starts the plain one instead of failing.
    await run("relaxed-build-missing", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /cpu \(1 thread, wasm SIMD\).*threads did not start/, null, { block: /\/(threads|relaxed)\// });
    // 8. A page that is not cross-origin isolated (no shared memory, as
    // many hosts serve it, or embedded in another site's page) runs the
    // relaxed build on one thread, and computes what the threads computed.
    await run("not-isolated", WEBGPU, "?isolated=0", 1024, /cpu \(1 thread, wasm SIMD, fused multiply-add\).*not cross-origin isolated/, async (page, s) => {
      const a = first.s?.entropy?.mean_bits, b = s?.entropy?.mean_bits;
      check(Math.abs(a - b) <= 1e-5 * Math.abs(b), `one thread and ${first.s?.engine} agree on the mean entropy at 1024: ${b} vs ${a}`);
    });
    // 9. Offline: once the page has started, its loader keeps every file
    // it used for the service worker (web/sw.js) to serve; with the server
    // gone (its own, on another port), a reload opens the page from that
    // copy and computes the same entropy.
    const own = http.createServer(serve);
    const ownBase = await listen(own);
    await run("offline", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /cpu/, async (page, s) => {
      const kept = await waitFor(page, (x) => x.offline, 60_000);
      check(kept?.offline === "ready", `the page is kept for offline use: ${kept?.offline}`);
      // One copy, of the build that started (and the page, the style).
      const copy = await page.evaluate(async () => {
        const names = (await caches.keys()).filter((n) => n.startsWith("nopescope-"));
        const keys = names.length ? (await (await caches.open(names[0])).keys()).map((r) => new URL(r.url).pathname) : [];
        return { names, keys };
      });
      check(copy.names.length === 1 && copy.keys.includes("/") && copy.keys.some((k) => k.startsWith("/threads/") && k.endsWith("_bg.wasm")) && !copy.keys.some((k) => k.startsWith("/relaxed/")), `one copy, of the build that started: ${JSON.stringify(copy)}`);
      await new Promise((r) => {
        own.close(r);
        own.closeAllConnections();
      });
      const refused = await page.evaluate((u) => fetch(u).then(() => "answered", () => "refused"), ownBase + "no-such-file");
      check(refused === "refused", `the server is gone: a new request is ${refused}`);
      await page.reload();
      const again = await waitReady(page, 256, 240_000);
      console.log(`  offline: ${again?.engine}`);
      const a = s?.entropy?.mean_bits, b = again?.entropy?.mean_bits;
      check(b > 0 && Math.abs(a - b) <= 1e-5 * Math.abs(a), `with no server the page opened from its copy and computed the same mean entropy at 256: ${b} vs ${a}`);
      check(again?.offline === "ready", `the copy still holds every file it used: ${again?.offline}`);
    }, { from: ownBase });
    // 10. A download that stalls (a classroom's Wi-Fi): a server that sends
    // the first 2 MB of the module and then nothing. The page says it has
    // stalled and keeps waiting; when the rest comes, the app starts.
    const held = [];
    const stalling = http.createServer((req, res) => {
      if (!req.url.endsWith("_bg.wasm")) return serve(req, res);
      const file = path.join(dist, decodeURIComponent(new URL(req.url, "http://127.0.0.1").pathname));
      const body = fs.readFileSync(file);
      res.writeHead(200, { ...ISOLATION, "content-type": "application/wasm", "content-length": body.length });
      res.write(body.subarray(0, 2_000_000));
      held.push(() => res.end(body.subarray(2_000_000)));
    });
    const stallBase = await listen(stalling);
    await run("stalled-download", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /cpu/, null, {
      from: stallBase,
      // Before the page's start is awaited: look at the loading line while
      // the module is held, then let the rest go.
      onPage: async (page) => {
        const t0 = Date.now();
        let text = "";
        while (Date.now() - t0 < 40_000 && !/no data for/.test(text)) {
          await page.waitForTimeout(500);
          text = (await page.evaluate(() => document.getElementById("nopescope_loading")?.textContent ?? "")) || text;
        }
        check(/Loading nopescope: 2\.0 of [0-9.]+ MB \(no data for 1[5-9] s/.test(text), `a stalled download is said on the page after ${((Date.now() - t0) / 1000).toFixed(0)} s: "${text}"`);
        held.splice(0).forEach((f) => f());
      },
    });
    stalling.close();
    // 11. What stops the app shows on the page instead of freezing it. A
    // Web Worker of the CPU engine that traps in a task (as when memory
    // runs out): the page's thread, which spins for the loop's tasks,
    // stops with an error that names it.
    const errorText = (page) => page.evaluate(() => document.getElementById("nopescope_error")?.textContent ?? "");
    const untilError = async (page) => {
      const t0 = Date.now();
      while (Date.now() - t0 < 60_000 && !(await errorText(page))) await page.waitForTimeout(250);
      return errorText(page);
    };
    await run("worker-stops", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /Web Worker/, async (page) => {
      await page.evaluate(() => {
        window.nopescope_test_fault("worker");
        const state = JSON.parse(window.nopescope_status()).state;
        window.nopescope_set_state(JSON.stringify({ ...state, length: 300 }));
      });
      const text = await untilError(page);
      check(/^nopescope stopped: [\s\S]*a worker of the CPU engine stopped \(it panicked, or memory ran out\)/.test(text), `a worker that stops is said on the page: "${text}"`);
    });
    // The page's own thread trapping (a failed allocation aborts, no panic).
    await run("page-stops", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /cpu/, async (page) => {
      await page.evaluate(() => window.nopescope_test_fault("page"));
      const text = await untilError(page);
      check(/^nopescope stopped: .*no more memory.*Reload the page/.test(text), `a trap on the page's thread is said on the page: "${text}"`);
    });
    // The browser's GPU process stops (as in a driver reset): eframe's
    // WebGPU device is lost and the canvas goes blank. The page says so,
    // with a button that reloads it, and the view changed before comes
    // back from the address.
    await run("device-lost", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /cpu/, async (page) => {
      await page.evaluate(() => {
        const state = JSON.parse(window.nopescope_status()).state;
        window.nopescope_set_state(JSON.stringify({ ...state, length: 300 }));
      });
      await waitReady(page, 300, 60_000);
      await (await page.context().newCDPSession(page)).send("Browser.crashGpuProcess");
      const text = await untilError(page);
      check(/^nopescope lost its graphics device.*this page cannot draw on\. Your view is kept in the page's address\. Reload the page$/.test(text), `a lost graphics device is said on the page: "${text}"`);
      await page.click("#nopescope_error button");
      const s = await waitReady(page, 300, 120_000);
      check(s?.entropy?.length === 300 && !(await errorText(page)), `its button reloaded the page, at the view's 300 tokens (${s?.entropy?.length})`);
    });
  }
  // For docs/APP.md (MEASURE=1, only or text): a frame's time with a long
  // text of one's own (a pasted book, 1 MB), the mouse moving over the page.
  if (process.env.MEASURE) {
    await run("measure-long-text", WEBGPU, "#state=" + encodeURIComponent(JSON.stringify({ length: 512 })), 512, /cpu/, async (page) => {
      const bytes = Number(process.env.TEXT_BYTES ?? 1e6);
      await page.evaluate((bytes) => {
        const line = "Call me Ishmael. Some years ago, never mind how long precisely, I went to sea. ";
        const state = JSON.parse(window.nopescope_status()).state;
        window.nopescope_set_state(JSON.stringify({ ...state, input: "pasted", pasted_text: line.repeat(Math.ceil(bytes / line.length)) }));
      }, bytes);
      await waitFor(page, (x) => x.idle && x.state.input === "pasted", 120_000);
      const cdp = process.env.PROFILE ? await page.context().newCDPSession(page) : null;
      for (const [label, moves] of [["warm-up", 10], ["measured", 40]]) {
        if (cdp && label === "measured") { await cdp.send("Profiler.enable"); await cdp.send("Profiler.start"); }
        const t0 = Date.now();
        for (let i = 0; i < moves; i++) {
          await page.mouse.move(600 + (i % 2) * 40, 300 + i);
          await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
        }
        if (label === "measured") console.log(`  a text of one's own of ${bytes} bytes: ${((Date.now() - t0) / moves).toFixed(1)} ms per mouse move and frame`);
      }
      if (cdp) {
        const { profile } = await cdp.send("Profiler.stop");
        const self = new Map();
        const dt = profile.timeDeltas;
        const byId = new Map(profile.nodes.map((n) => [n.id, n]));
        profile.samples.forEach((id, i) => {
          const n = byId.get(id);
          const k = n.callFrame.functionName || n.callFrame.url;
          self.set(k, (self.get(k) ?? 0) + (dt[i] ?? 0) / 1000);
        });
        const busy = [...self.entries()].filter(([k]) => k !== "(idle)").reduce((a, [, v]) => a + v, 0);
        console.log(`  the page's thread busy ${(busy / 40).toFixed(1)} ms per mouse move and frame`);
        [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12).forEach(([k, v]) => console.log(`  ${v.toFixed(0)} ms  ${k.slice(0, 100)}`));
      }
    });
  }
  // For docs/APP.md (MEASURE=1 or only): frame times during a 4096-token computation.
  if (process.env.MEASURE && process.env.MEASURE !== "text") {
    // The CPU engine's forward speed in the page (docs/BENCH.md), in
    // both builds.
    for (const [build, query] of [["threads", ""], ["relaxed SIMD", "?threads=1"], ["plain SIMD", "?simd=plain"]]) {
      await run("measure-forward-speed", WEBGPU, query + "#state=" + encodeURIComponent(JSON.stringify({ length: 256 })), 256, /cpu/, async (page) => {
        // Timed once the page's own views are computed (they share the thread).
        await waitFor(page, (x) => x.idle, 60_000);
        for (const length of [256, 1024]) {
          const tps = await page.evaluate((l) => window.nopescope_bench_forward(l, 9), length);
          console.log(`  web CPU engine (${build} build), bundled NoPE, forward at ${length}: ${tps.toFixed(0)} tokens/s`);
        }
      });
    }
    const big = "#state=" + encodeURIComponent(JSON.stringify({ length: 4096 }));
    await run("measure-4096-cpu", WEBGPU, big, 4096, /cpu/);
  }
} catch (e) {
  console.log(`FAIL ${e.stack ?? e}`);
  failures++;
} finally {
  server.close();
}
console.log(failures ? `${failures} check(s) failed` : "all web checks passed");
process.exit(failures ? 1 : 0);
