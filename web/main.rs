//! The web page's entry (built by Trunk for wasm32, see Trunk.toml): starts
//! the app on the page's canvas. Natively it only points to `nopescope`.

#[cfg(target_arch = "wasm32")]
fn main() {
    // The shared-memory build starts this module in Web Workers too (the
    // CPU engine's threads): the app starts only on the page.
    if web_sys::window().is_none() {
        return;
    }
    wasm_bindgen_futures::spawn_local(async {
        if let Err(e) = nopescope::app::web::start("nopescope_canvas").await {
            web_sys::console::error_1(&e);
            if let Some(el) = web_sys::window()
                .and_then(|w| w.document())
                .and_then(|d| d.get_element_by_id("nopescope_error"))
            {
                el.set_text_content(Some(&format!("nopescope could not start: {e:?}")));
            }
        }
    });
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("nopescope-web is the web page's entry (trunk serve); run `nopescope` for the desktop app");
}
