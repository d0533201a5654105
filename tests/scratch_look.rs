mod app_common;
use egui_kittest::kittest::Queryable;
use nopescope::app::state::{InputKind, Tab, ViewState};
use std::time::Duration;

#[test]
fn look() {
    let s = ViewState {
        length: 512,
        input: InputKind::Passkey,
        ..Default::default()
    };
    let mut h = app_common::harness(s, [1280.0, 1100.0]);
    app_common::settle(&mut h, Duration::from_secs(180));
    h.get_by_label_contains("The text the model reads").click();
    h.run_steps(3);
    h.render().unwrap().save("/tmp/l_doc_explore.png").unwrap();
    let s = ViewState {
        length: 1024,
        tab: Tab::Passkey,
        ..Default::default()
    };
    let mut h = app_common::harness(s, [1280.0, 1100.0]);
    h.ctx.set_theme(eframe::egui::Theme::Light);
    app_common::settle(&mut h, Duration::from_secs(180));
    h.get_by_label_contains("The text the model reads").click();
    h.run_steps(3);
    h.render().unwrap().save("/tmp/l_doc_lab.png").unwrap();
}
