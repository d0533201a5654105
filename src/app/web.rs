//! The web page's side of the app: start on a canvas, the state in the URL
//! (`#state=...`, so a shared link opens the same view), a small hook for
//! tests and scripts (`nopescope_status()` returns the app's state and
//! progress as JSON, `nopescope_set_state(json)` sets the view), and the
//! page title as a readiness signal ("nopescope · ready").

use std::cell::{Cell, RefCell};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use super::jobs::JobResult;
use super::state::ViewState;
use super::NopeApp;

thread_local! {
    /// The app's status as JSON, less its state and link (`Published`),
    /// written after every frame.
    static STATUS: RefCell<String> = const { RefCell::new(String::new()) };
    /// The state last published, in the URL and in the status.
    static PUBLISHED: RefCell<Option<Published>> = const { RefCell::new(None) };
    /// A state set from JavaScript or read from a link, applied at the
    /// next frame; with a link, what it could not use (noted above the
    /// page with what the state's ranges change; a script's state clears
    /// the note of the link before it).
    static PENDING: RefCell<Option<(ViewState, Option<Vec<String>>)>> = const { RefCell::new(None) };
    /// A link pasted into the address bar (its fragment), read at the
    /// next frame onto the view on screen.
    static PENDING_LINK: RefCell<Option<String>> = const { RefCell::new(None) };
    /// A search asked for from JavaScript, started at the next frame.
    static START_SEARCH: RefCell<bool> = const { RefCell::new(false) };
    static CTX: RefCell<Option<eframe::egui::Context>> = const { RefCell::new(None) };
    /// When the computations last got the thread back from the browser,
    /// and the longest they have held it since the page opened, or since a
    /// search was started through the hook (ms): the longest a frame can
    /// wait for them (docs/APP.md).
    static RESUMED: Cell<Option<f64>> = const { Cell::new(None) };
    static HELD_MAX_MS: Cell<f64> = const { Cell::new(0.0) };
}

/// The app's state and what it has computed, as JSON.
#[wasm_bindgen]
pub fn nopescope_status() -> String {
    let rest = STATUS.with(|s| s.borrow().clone());
    PUBLISHED.with(|p| match (p.borrow().as_ref(), rest.strip_prefix('{')) {
        (Some(p), Some(rest)) => format!(
            "{{\"state\":{},\"link\":{},{rest}",
            p.json,
            serde_json::Value::from(super::views::share::link("", &p.fragment))
        ),
        _ => rest,
    })
}

/// The state as last published, and its JSON and URL fragment, made again
/// only when the state changes: a long pasted text would otherwise be
/// serialized, escaped and copied several times a frame.
struct Published {
    state: ViewState,
    json: String,
    fragment: String,
}

/// Sets the view from JSON (as `nopescope_status().state` gives it).
#[wasm_bindgen]
pub fn nopescope_set_state(json: &str) -> Result<(), JsValue> {
    let state = ViewState::from_link_json(json).map_err(|e| JsValue::from_str(&e))?;
    PENDING.with(|p| *p.borrow_mut() = Some((state, None)));
    CTX.with(|c| {
        if let Some(ctx) = c.borrow().as_ref() {
            ctx.request_repaint();
        }
    });
    Ok(())
}

/// For the page's test of how a stop shows: `"worker"` makes the next
/// task a Web Worker of the CPU engine takes abort that worker (in the
/// threads build); `"page"` aborts the page's thread after this call
/// returns. Either traps as memory running out does.
#[wasm_bindgen]
pub fn nopescope_test_fault(which: &str) {
    match which {
        #[cfg(target_feature = "atomics")]
        "worker" => crate::model::cpu::par::stop_a_worker(),
        "page" => {
            let abort = Closure::once_into_js(|| -> () { std::process::abort() });
            if let Some(window) = web_sys::window() {
                let _ = window.set_timeout_with_callback(abort.unchecked_ref());
            }
        }
        _ => {}
    }
}

/// Starts a temperature search with the tuning panel's settings (as its
/// Start button does); `nopescope_status().search` follows it.
#[wasm_bindgen]
pub fn nopescope_start_search() {
    START_SEARCH.with(|s| *s.borrow_mut() = true);
    // From here `held_max_ms` measures the search alone.
    HELD_MAX_MS.set(0.0);
    CTX.with(|c| {
        if let Some(ctx) = c.borrow().as_ref() {
            ctx.request_repaint();
        }
    });
}

/// Forward tokens per second of the CPU engine in this page on the bundled
/// NoPE model at `length` tokens (median of `repeats`), for docs/BENCH.md;
/// holds the page while it runs.
#[wasm_bindgen]
pub async fn nopescope_bench_forward(length: usize, repeats: usize) -> Result<f64, JsValue> {
    super::compute::time_bundled_forward(length, repeats, &now_ms)
        .await
        .map_err(|e| JsValue::from_str(&e.to_string()))
}

/// Why the CPU engine runs on the threads it does in this page (for the
/// status bar's hover): the threads build's workers, or what kept the page
/// on one thread.
pub fn threads_note() -> String {
    use super::text;
    let threads = crate::model::cpu::par::num_threads();
    if threads > 1 {
        return text::web_threads(threads);
    }
    let flag = |name: &str| loader(name).as_bool();
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    let note = if processors() <= 1 {
        text::WEB_ONE_PROCESSOR
    } else if cfg!(target_feature = "atomics") {
        text::WEB_ONE_THREAD_NO_WORKERS
    } else if flag("shared") == Some(true) {
        text::WEB_ONE_THREAD_NOT_STARTED
    } else if search.contains("threads=1") || search.contains("simd=plain") {
        text::WEB_ONE_THREAD_ASKED
    } else if flag("isolated") != Some(true) {
        text::WEB_ONE_THREAD_NOT_ISOLATED
    } else if flag("fused") == Some(false) {
        text::WEB_ONE_THREAD_NO_RELAXED
    } else {
        text::WEB_ONE_THREAD_NOT_STARTED
    };
    note.to_string()
}

/// A field of what the page's loader (web/builds.sh) records in
/// `globalThis.nopescopeLoader`: `fused`, `isolated`, `shared` (what it
/// found, and whether it tried the threads build), `glue` (the URL of the
/// bindings it started) and `offline` (see [`offline`]); undefined without
/// that loader.
fn loader(field: &str) -> JsValue {
    js_sys::Reflect::get(&js_sys::global(), &JsValue::from_str("nopescopeLoader"))
        .and_then(|l| js_sys::Reflect::get(&l, &JsValue::from_str(field)))
        .unwrap_or(JsValue::UNDEFINED)
}

/// Whether the page is kept for offline use: the loader's `offline` field,
/// "ready" once it has kept every file this start used for the service
/// worker (web/sw.js) to serve, else why not ("not saved: ..."); None until
/// it is done.
pub fn offline() -> Option<String> {
    loader("offline").as_string()
}

/// The page's address without its query and fragment (what a shared link
/// starts with).
pub fn page_address() -> Option<String> {
    let href = web_sys::window()?.location().href().ok()?;
    Some(href.split(['#', '?']).next().unwrap_or("").to_string())
}

/// The logical processors the browser reports (at least 1).
fn processors() -> usize {
    web_sys::window()
        .map(|w| w.navigator().hardware_concurrency() as usize)
        .unwrap_or(1)
        .max(1)
}

/// Whether the page is mostly touched, as the browser says: its primary
/// pointer is coarse (a phone or a tablet; not a laptop whose screen also
/// takes touch, where a mouse drag should still select text).
/// `AppOptions::touch_screen`.
pub fn touch_screen() -> bool {
    web_sys::window()
        .and_then(|w| w.match_media("(pointer: coarse)").ok().flatten())
        .is_some_and(|m| m.matches())
}

/// Resolves after `ms` milliseconds through the browser's event loop, so
/// the runner lets frames through.
pub async fn yield_to_browser(ms: i32) {
    if let Some(t0) = RESUMED.get() {
        HELD_MAX_MS.set(HELD_MAX_MS.get().max(now_ms() - t0));
    }
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
    RESUMED.set(Some(now_ms()));
}

/// A frame for the browser, as the engine's and the lab's pauses take it
/// (`transformer::Pause`).
pub fn pause() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> {
    Box::pin(yield_to_browser(0))
}

/// Milliseconds on the page's clock.
pub fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or_default()
}

/// Offers `bytes` to the user as a download named `name`.
pub fn download(name: &str, bytes: &[u8], mime: &str) -> Result<(), String> {
    let fail = |e: JsValue| format!("cannot download {name}: {e:?}");
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| format!("cannot download {name}: no document"))?;
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(mime);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &options).map_err(fail)?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(fail)?;
    let a = document
        .create_element("a")
        .map_err(fail)?
        .dyn_into::<web_sys::HtmlAnchorElement>()
        .map_err(|_| format!("cannot download {name}: no anchor element"))?;
    a.set_href(&url);
    a.set_download(name);
    a.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
}

/// Lets the user pick files (several at once) and hands their names and
/// bytes to `open` once the browser has read them all.
pub fn pick_files(open: impl Fn(super::compute::ModelSource) + 'static) -> Result<(), String> {
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or("cannot pick files: no document")?;
    let input = document
        .create_element("input")
        .map_err(|e| format!("cannot pick files: {e:?}"))?
        .dyn_into::<web_sys::HtmlInputElement>()
        .map_err(|_| "cannot pick files: no input element".to_string())?;
    input.set_type("file");
    input.set_multiple(true);
    let picked = input.clone();
    let open = std::rc::Rc::new(open);
    let on_change = Closure::<dyn FnMut()>::new(move || {
        let Some(list) = picked.files() else { return };
        let files: Vec<web_sys::File> = (0..list.length()).filter_map(|i| list.get(i)).collect();
        let open = std::rc::Rc::clone(&open);
        // Weights too large for the page are refused before any is read.
        let sizes: Vec<(String, u64)> = files.iter().map(|f| (f.name(), f.size() as u64)).collect();
        if let Some(why) = super::compute::web_weights_too_large(&sizes) {
            let weights = sizes
                .iter()
                .find(|(n, _)| n.ends_with(".safetensors"))
                .map(|(n, _)| n.clone());
            open(super::compute::ModelSource::Files {
                name: super::text::PICKED_FILES.into(),
                files: Vec::new(),
                unread: vec![(weights.unwrap_or_default(), why)],
            });
            return;
        }
        wasm_bindgen_futures::spawn_local(async move {
            let (mut out, mut unread) = (Vec::new(), Vec::new());
            for f in files {
                match wasm_bindgen_futures::JsFuture::from(f.array_buffer()).await {
                    Ok(buf) => out.push((f.name(), js_sys::Uint8Array::new(&buf).to_vec())),
                    // (too large for the browser, say): named in the error,
                    // not dropped without a word.
                    Err(e) => unread.push((
                        f.name(),
                        format!(
                            "{} bytes: {}",
                            f.size(),
                            e.as_string().unwrap_or_else(|| format!("{e:?}"))
                        ),
                    )),
                }
            }
            open(super::compute::ModelSource::Files {
                name: super::text::PICKED_FILES.into(),
                files: out,
                unread,
            });
        });
    });
    input.set_onchange(Some(on_change.as_ref().unchecked_ref()));
    on_change.forget();
    input.click();
    Ok(())
}

/// The address's fragment (`#...`), where the page's links keep the view.
fn url_fragment() -> Option<String> {
    web_sys::window()?.location().hash().ok()
}

/// After each frame: apply a state set from JavaScript, mirror the state
/// in the URL and publish the status.
pub fn after_frame(app: &mut NopeApp, ctx: &eframe::egui::Context) {
    // A link read onto the view on screen (what it could not use stays).
    if let Some(fragment) = PENDING_LINK.with(|p| p.borrow_mut().take()) {
        if let Some((s, problems)) = ViewState::read_link_onto(&fragment, || app.state.clone()) {
            PENDING.with(|p| *p.borrow_mut() = Some((s, Some(problems))));
        }
    }
    if let Some((s, problems)) = PENDING.with(|p| p.borrow_mut().take()) {
        // In range before anything below asks for its jobs (a length of
        // 4e9 from a script would otherwise start one this frame).
        app.state = s;
        let info = app.info();
        let changed = app.state.sanitize(info.layers, info.heads);
        let noted: Vec<String> = match problems {
            Some(problems) => problems.into_iter().chain(changed).collect(),
            None => Vec::new(),
        };
        app.note_link_problems(&noted);
    }
    if START_SEARCH.with(|s| std::mem::take(&mut *s.borrow_mut())) {
        app.start_search();
    }
    let (changed, theme_changed) = PUBLISHED.with(|p| match p.borrow().as_ref() {
        None => (true, true),
        Some(p) => (p.state != app.state, p.state.theme != app.state.theme),
    });
    if changed {
        // The page under the canvas in the app's theme (web/style.css),
        // so that a reload or a resize shows no other colour.
        if theme_changed {
            if let Some(root) = web_sys::window()
                .and_then(|w| w.document())
                .and_then(|d| d.document_element())
            {
                root.set_class_name(match app.state.theme {
                    super::state::Theme::System => "",
                    super::state::Theme::Light => "theme-light",
                    super::state::Theme::Dark => "theme-dark",
                });
            }
        }
        let published = Published {
            state: app.state.clone(),
            json: serde_json::to_string(&app.state).unwrap_or_default(),
            fragment: app.state.to_fragment(),
        };
        if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
            let _ = history.replace_state_with_url(&JsValue::NULL, "", Some(&published.fragment));
        }
        PUBLISHED.with(|p| *p.borrow_mut() = Some(published));
    }
    let keys = super::views::Keys::of(&app.state, app.info());
    // Read, not asked for: the Explore page asks for it (`NopeApp::ui`;
    // elsewhere it would run beside that page's own work).
    let entropy = match app.jobs.peek(&keys.entropy(&keys.ones)).and_then(|e| e.result()) {
        Some(JobResult::Entropy(p)) => {
            let mean = p.mean_over_heads();
            Some(serde_json::json!({
                "length": p.length,
                "windows": p.windows,
                "mean_bits": mean.iter().sum::<f32>() / mean.len().max(1) as f32,
                "loss": p.loss,
            }))
        }
        _ => None,
    };
    // Ready: the Explore page's entropy is drawn; on another page, its own
    // work is done.
    let ready = match app.state.tab {
        super::state::Tab::Explore => entropy.is_some(),
        _ => app.jobs.is_idle() && !app.jobs.engine().name.is_empty(),
    };
    let tour = app.state.tour.map(|step| {
        let step = step.min(super::tour::STEPS.len() - 1);
        let (promise, detail) = match super::tour::promise(step, &app.state, &app.jobs, &keys, app.tuning().seen()) {
            super::tour::Promise::Pending => ("pending", String::new()),
            super::tour::Promise::Waiting(m) => ("pending", m),
            super::tour::Promise::Met(m) => ("met", m),
            super::tour::Promise::Broken(m) => ("broken", m),
        };
        serde_json::json!({
            "step": step + 1,
            "title": super::tour::STEPS[step].title,
            "promise": promise,
            "detail": detail,
        })
    });
    // egui's points in CSS pixels (the zoom factor; 1 unless the user zoomed
    // the app itself).
    let dpr = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio()) as f32;
    let css_per_point = ctx.pixels_per_point() / dpr.max(1e-3);
    // The state and the link are added when a script asks (`nopescope_status`).
    let status = serde_json::json!({
        "engine": app.jobs.engine().to_string(),
        "entropy": entropy,
        "tour": tour,
        "search": app.tuning().losses().map(|(losses, finished)| serde_json::json!({
            "losses": losses,
            "finished": finished,
        })),
        "idle": app.jobs.is_idle(),
        // Where to tap: each head map cell's centre, in CSS pixels.
        "head_cells": super::views::head_map::cell_centres(ctx)
            .iter()
            .map(|&(l, h, p)| [l as f32, h as f32, p.x * css_per_point, p.y * css_per_point])
            .collect::<Vec<_>>(),
        "screen_points": [ctx.content_rect().width(), ctx.content_rect().height()],
        "pixels_per_point": ctx.pixels_per_point(),
        "zoom_factor": ctx.zoom_factor(),
        "device_pixel_ratio": dpr,
        "first_plot_s": app.first_plot_s,
        "busy_frames": app.frame_stats.busy_frames,
        "busy_max_ms": app.frame_stats.busy_max_ms,
        "busy_mean_ms": app.frame_stats.busy_total_ms / app.frame_stats.busy_frames.max(1) as f64,
        "held_max_ms": HELD_MAX_MS.get(),
        "offline": offline(),
        "link_note": app.link_note,
    });
    STATUS.with(|s| *s.borrow_mut() = status.to_string());
    if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
        doc.set_title(if ready {
            "nopescope · ready"
        } else {
            "nopescope · computing"
        });
    }
}

/// After a panic (or a failed allocation that unwinds as one) the app
/// stops drawing; without this the page only froze and the reason was in
/// the console. Workers have no document: there it does nothing more.
fn show_panics_on_the_page() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let what = info.payload_as_str().unwrap_or("an internal error");
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        show_stop(&format!(
            "nopescope stopped: {what}. Reloading the page starts it again, at the view kept in the page's address. \
             (For a bug report: it panicked{place}; the browser's console has the details.) "
        ));
    }));
}

/// Writes why the app stopped in the page's box over the canvas, with a
/// button that reloads the page.
fn show_stop(message: &str) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Some(element) = document.get_element_by_id("nopescope_error") else {
        return;
    };
    element.set_text_content(Some(message));
    if let Ok(button) = document.create_element("button") {
        button.set_text_content(Some("Reload the page"));
        if let Ok(button) = button.dyn_into::<web_sys::HtmlElement>() {
            let reload = Closure::<dyn Fn()>::new(|| {
                if let Some(window) = web_sys::window() {
                    let _ = window.location().reload();
                }
            });
            button.set_onclick(Some(reload.as_ref().unchecked_ref()));
            reload.forget();
            let _ = element.append_child(&button);
        }
    }
}

/// A lost graphics device (the browser's GPU process stopped or was reset)
/// leaves the canvas blank: eframe draws with that device, and no other
/// can take its place in this page. Says so on the page, with a button
/// that reloads it (`show_stop`; the view is in the address, so it comes
/// back as it was).
fn watch_for_a_lost_device(device: &eframe::wgpu::Device) {
    device.set_device_lost_callback(|reason, message| {
        // Only this page's end destroys it.
        if reason == eframe::wgpu::DeviceLostReason::Destroyed {
            return;
        }
        web_sys::console::error_1(&JsValue::from_str(&format!(
            "nopescope: the graphics device was lost ({reason:?}): {message}"
        )));
        let detail = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        show_stop(&format!(
            "nopescope lost its graphics device{detail}: the browser's GPU process stopped or was reset, \
             and this page cannot draw on. Your view is kept in the page's address. "
        ));
    });
}

/// Starts the app on the canvas with id `canvas_id`.
pub async fn start(canvas_id: &str) -> Result<(), JsValue> {
    let document = web_sys::window()
        .and_then(|w| w.document())
        .ok_or_else(|| JsValue::from_str("no document"))?;
    let canvas = document
        .get_element_by_id(canvas_id)
        .ok_or_else(|| JsValue::from_str("no canvas"))?
        .dyn_into::<web_sys::HtmlCanvasElement>()?;
    // The hook on `window` too, whatever the page's loader does with the
    // module's exports.
    if let Some(window) = web_sys::window() {
        let status = Closure::<dyn Fn() -> String>::new(nopescope_status);
        let set = Closure::<dyn Fn(String) -> Result<(), JsValue>>::new(|json: String| nopescope_set_state(&json));
        let bench = Closure::<dyn Fn(usize, usize) -> js_sys::Promise>::new(|length, repeats| {
            wasm_bindgen_futures::future_to_promise(async move {
                nopescope_bench_forward(length, repeats).await.map(JsValue::from)
            })
        });
        js_sys::Reflect::set(&window, &JsValue::from_str("nopescope_bench_forward"), bench.as_ref())?;
        bench.forget();
        let fault = Closure::<dyn Fn(String)>::new(|which: String| nopescope_test_fault(&which));
        js_sys::Reflect::set(&window, &JsValue::from_str("nopescope_test_fault"), fault.as_ref())?;
        fault.forget();
        let search = Closure::<dyn Fn()>::new(nopescope_start_search);
        js_sys::Reflect::set(&window, &JsValue::from_str("nopescope_start_search"), search.as_ref())?;
        search.forget();
        js_sys::Reflect::set(&window, &JsValue::from_str("nopescope_status"), status.as_ref())?;
        js_sys::Reflect::set(&window, &JsValue::from_str("nopescope_set_state"), set.as_ref())?;
        // They live as long as the page.
        status.forget();
        set.forget();
    }
    #[cfg(target_feature = "atomics")]
    threads::start_workers().await;
    let fragment = url_fragment();
    // A link pasted into this tab's address bar (or a same-page link)
    // changes only the fragment: read it onto the view on screen at the
    // next frame (`after_frame`; its note says what it could not use).
    // (The app's own `replaceState` fires no hashchange.)
    if let Some(window) = web_sys::window() {
        let on_hash = Closure::<dyn Fn()>::new(|| {
            if let Some(fragment) = url_fragment() {
                PENDING_LINK.with(|p| *p.borrow_mut() = Some(fragment));
                CTX.with(|c| {
                    if let Some(ctx) = c.borrow().as_ref() {
                        ctx.request_repaint();
                    }
                });
            }
        });
        window.set_onhashchange(Some(on_hash.as_ref().unchecked_ref()));
        on_hash.forget();
    }
    // eframe installs its panic handler here (it logs to the console);
    // ours, chained after it, also tells the person at the page.
    let runner = eframe::WebRunner::new();
    show_panics_on_the_page();
    runner
        .start(
            canvas,
            eframe::WebOptions::default(),
            Box::new(move |cc| {
                CTX.with(|c| *c.borrow_mut() = Some(cc.egui_ctx.clone()));
                if let Some(render) = cc.wgpu_render_state.as_ref() {
                    watch_for_a_lost_device(&render.device);
                }
                Ok(Box::new(NopeApp::from_link(cc, fragment.as_deref())))
            }),
        )
        .await
}

/// The shared-memory build's threads (web/builds.sh builds it; the page
/// loads it where it is cross-origin isolated): Web Workers that run the
/// same module on the same memory and join the CPU engine's pool
/// (`model::cpu::par`).
#[cfg(target_feature = "atomics")]
mod threads {
    use wasm_bindgen::prelude::*;
    use wasm_bindgen::JsCast;

    /// A worker: loads the page's bindings (their URL, the module and the
    /// memory come in its first message), starts this module on the shared
    /// memory with a 2 MiB stack, and joins the pool for good. If it stops
    /// (a trap: memory ran out, or an abort after a panic) it says so to
    /// the pool, whose loop then stops on the page's thread with an error
    /// instead of spinning for ever.
    const WORKER_JS: &str = "onmessage = async (e) => {
  const [glue, module, memory] = e.data;
  const m = await import(glue);
  m.initSync({ module, memory, thread_stack_size: 2097152 });
  try {
    m.nopescope_worker();
  } catch (error) {
    m.nopescope_worker_stopped();
    throw error;
  }
};";

    /// A worker's entry: joins the CPU engine's pool and never returns.
    #[wasm_bindgen]
    pub fn nopescope_worker() {
        crate::model::cpu::par::worker_loop()
    }

    /// Called by a worker whose `nopescope_worker` stopped (`WORKER_JS`).
    #[wasm_bindgen]
    pub fn nopescope_worker_stopped() {
        crate::model::cpu::par::worker_stopped()
    }

    /// Starts one worker per logical processor beyond the page's own (at
    /// most `par::MAX_WORKERS`) and waits up to 5 s for them to join. The
    /// loader names the bindings' URL (`loader("glue")`);
    /// without it, or if a worker cannot start, the engine runs on fewer
    /// threads (the console says why).
    pub async fn start_workers() {
        if let Err(e) = try_start_workers().await {
            web_sys::console::warn_1(&JsValue::from_str(&format!(
                "nopescope: the CPU engine runs on the page's thread alone: {}",
                e.as_string().unwrap_or_else(|| format!("{e:?}"))
            )));
        }
    }

    async fn try_start_workers() -> Result<(), JsValue> {
        let glue = super::loader("glue")
            .as_string()
            .ok_or("the page's loader did not name its bindings (nopescopeLoader.glue)")?;
        let wanted = (super::processors() - 1).min(crate::model::cpu::par::MAX_WORKERS);
        if wanted == 0 {
            return Ok(());
        }
        crate::model::cpu::par::install_panic_hook();
        let parts = js_sys::Array::of1(&JsValue::from_str(WORKER_JS));
        let options = web_sys::BlobPropertyBag::new();
        options.set_type("text/javascript");
        let blob = web_sys::Blob::new_with_str_sequence_and_options(&parts, &options)?;
        let url = web_sys::Url::create_object_url_with_blob(&blob)?;
        let worker_options = web_sys::WorkerOptions::new();
        worker_options.set_type(web_sys::WorkerType::Module);
        let message = js_sys::Array::of3(
            &JsValue::from_str(&glue),
            &wasm_bindgen::module(),
            &wasm_bindgen::memory(),
        );
        for _ in 0..wanted {
            let worker = web_sys::Worker::new_with_options(&url, &worker_options)?;
            let onerror = Closure::<dyn Fn(web_sys::ErrorEvent)>::new(|e: web_sys::ErrorEvent| {
                web_sys::console::error_1(&JsValue::from_str(&format!(
                    "nopescope: a worker of the CPU engine failed: {}",
                    e.message()
                )));
            });
            worker.set_onerror(Some(onerror.as_ref().unchecked_ref()));
            onerror.forget();
            worker.post_message(&message)?;
        }
        let t0 = super::now_ms();
        while crate::model::cpu::par::num_threads() - 1 < wanted {
            if super::now_ms() - t0 > 5000.0 {
                return Err(JsValue::from_str(&format!(
                    "{} of {wanted} workers joined within 5 s",
                    crate::model::cpu::par::num_threads() - 1
                )));
            }
            super::yield_to_browser(10).await;
        }
        Ok(())
    }
}
