//! What the app's kittest files share: the app in a harness drawn with
//! wgpu (lavapipe on CI machines; no adapter is a failure), and waiting for
//! its jobs. Each test binary uses a part of it.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use egui_kittest::Harness;
use nopescope::app::state::ViewState;
use nopescope::app::{AppOptions, NopeApp};

/// The app on `state` in a window of `size` points.
pub fn harness(state: ViewState, size: [f32; 2]) -> Harness<'static, NopeApp> {
    Harness::builder()
        .with_size(size)
        .wgpu()
        .build_eframe(move |cc| NopeApp::new(&cc.egui_ctx, state, None, AppOptions::default()))
}

/// Steps frames until every job has finished (`limit` at most); returns
/// how long that took.
pub fn settle(h: &mut Harness<'static, NopeApp>, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut idle_frames = 0;
    while idle_frames < 3 {
        h.step();
        if h.state().jobs.is_idle() {
            idle_frames += 1;
        } else {
            idle_frames = 0;
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(start.elapsed() < limit, "jobs still running after {limit:?}");
    }
    start.elapsed()
}
