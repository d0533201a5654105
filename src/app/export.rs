//! Exporting a plot: its data as CSV, the figure as SVG (drawn here from the
//! same data) and its picture as PNG (the plot's pixels on screen). A view
//! describes what it plots as a [`Figure`] (lines) or a [`Grid`] (a map)
//! and calls [`buttons`] or [`grid_buttons`]; any other file the app
//! writes (a head-scales file, the pass-key lab's CSV) goes through
//! [`save_file`]. One path for all of them: natively a save dialog (a path,
//! prefilled, and a confirmation before replacing a file; written to a
//! temporary name and renamed), on the web a download.
//!
//! Requests travel through egui's memory, so views need no extra handle.

use eframe::egui;

use super::palette::{Look, Pattern};
use super::text;

/// One line of a figure.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// As drawn on screen.
    pub look: Look,
    pub points: Vec<[f64; 2]>,
}

/// Most points of one line drawn, on screen and in an SVG: past it,
/// consecutive points are averaged in bins (a long input's curves). The
/// CSV keeps every point.
pub const MAX_LINE_POINTS: usize = 1024;

/// `points` averaged over consecutive bins, at most `most` of them (x and
/// y both averaged: a bin of positions stands at its middle).
pub fn bin_points(points: &[[f64; 2]], most: usize) -> Vec<[f64; 2]> {
    bin_by(points.len(), most, |i| points[i])
}

/// The `n` points `point(0..n)` averaged over consecutive bins, at most
/// `most` of them (x and y both averaged): what `bin_points` and the plots'
/// own binning (`views::entropy::binned`, from the values, with no copy of
/// every point) share.
pub fn bin_by(n: usize, most: usize, point: impl Fn(usize) -> [f64; 2]) -> Vec<[f64; 2]> {
    let bin = n.div_ceil(most.max(1)).max(1);
    (0..n)
        .step_by(bin)
        .map(|start| {
            let end = (start + bin).min(n);
            let (mut x, mut y) = (0.0, 0.0);
            for i in start..end {
                let [px, py] = point(i);
                x += px;
                y += py;
            }
            let k = (end - start) as f64;
            [x / k, y / k]
        })
        .collect()
}

/// Every value of `ys` as a point (its index, the value).
pub fn indexed(ys: &[f32]) -> Vec<[f64; 2]> {
    ys.iter().enumerate().map(|(i, &y)| [i as f64, y as f64]).collect()
}

/// A vertical mark (the training length L, the pass key).
#[derive(Debug, Clone)]
pub struct Mark {
    pub name: String,
    pub x: f64,
    pub look: Look,
}

/// What a plot shows, as data.
#[derive(Debug, Clone, Default)]
pub struct Figure {
    /// File name without extension.
    pub stem: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub marks: Vec<Mark>,
    /// Log-scaled x axis (lengths).
    pub log_x: bool,
    /// Lines over positions or keys, drawn in bins past `MAX_LINE_POINTS`
    /// on screen: the SVG bins them the same way (the CSV keeps every
    /// point). Other figures' SVG draws every point, as their plots do.
    pub bin: bool,
}

/// A map (the layer x head map, the pooled attention map): values per
/// (row, column), coloured low to high with viridis between `lo` and `hi`.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    /// File name without extension.
    pub stem: String,
    pub title: String,
    pub row_label: String,
    pub col_label: String,
    pub value_label: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// Row-major, rows x cols; NaN for an empty cell.
    pub values: Vec<f64>,
    pub lo: f64,
    pub hi: f64,
    /// Colour by log10 of the value (lo and hi as values, both > 0).
    pub log_colour: bool,
}

/// Cells past which a map is not offered as SVG (one rect per cell).
pub const SVG_MAX_CELLS: usize = 128 * 128;

impl Grid {
    /// A layer x head map (the Explore page's, the tuning page's scales):
    /// a row per layer, a column per head, `values` layer-major, coloured
    /// from `lo` to `hi`.
    pub fn heads(
        stem: String,
        title: String,
        value_label: &str,
        heads: usize,
        values: &[f32],
        lo: f32,
        hi: f32,
    ) -> Self {
        let layers = values.len() / heads.max(1);
        Grid {
            stem,
            title,
            row_label: crate::app::text::MAP_ROWS.into(),
            col_label: crate::app::text::MAP_COLS.into(),
            value_label: value_label.into(),
            rows: (0..layers).map(crate::app::text::layer_row).collect(),
            cols: (0..heads).map(crate::app::text::head_column).collect(),
            values: values.iter().map(|&v| v as f64).collect(),
            lo: lo as f64,
            hi: hi as f64,
            log_colour: false,
        }
    }

    /// Long format: one row per cell (row, column, value).
    pub fn csv(&self) -> String {
        let mut out = format!(
            "{},{},{}\n",
            csv_field(&self.row_label),
            csv_field(&self.col_label),
            csv_field(&self.value_label)
        );
        let cols = self.cols.len().max(1);
        for (k, v) in self.values.iter().enumerate() {
            let (r, c) = (k / cols, k % cols);
            let (rn, cn) = (
                self.rows.get(r).map_or("", String::as_str),
                self.cols.get(c).map_or("", String::as_str),
            );
            let v = if v.is_finite() { v.to_string() } else { String::new() };
            out.push_str(&format!("{},{},{v}\n", csv_field(rn), csv_field(cn)));
        }
        out
    }

    /// A standalone SVG: one square per cell in viridis, the row and column
    /// names, and a colour bar with its ends.
    pub fn svg(&self) -> String {
        let (nr, nc) = (self.rows.len().max(1), self.cols.len().max(1));
        let cell = (480.0 / nr.max(nc) as f64).clamp(2.0, 40.0);
        let (left, top) = (90.0, 60.0);
        let (gw, gh) = (cell * nc as f64, cell * nr as f64);
        // Wide enough for the title (about 7 px a character at 15 px).
        let title_w = left + 7.5 * self.title.chars().count() as f64 + 20.0;
        let (w, h) = ((left + gw + 40.0).max(title_w), top + gh + 80.0);
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">{}</text>\n<text x=\"{left}\" y=\"42\">{} (columns) by {} (rows)</text>\n",
            xml(&self.title),
            xml(&self.col_label),
            xml(&self.row_label)
        );
        let scale = |v: f64| if self.log_colour { v.max(1e-30).log10() } else { v };
        let (lo, span) = (scale(self.lo), (scale(self.hi) - scale(self.lo)).max(1e-12));
        for (k, v) in self.values.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let (r, c) = (k / nc, k % nc);
            let fill = super::palette::viridis(((scale(*v) - lo) / span) as f32);
            s.push_str(&format!(
                "<rect x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{:.2}\" fill=\"{}\"><title>{}, {}: {v}</title></rect>\n",
                left + c as f64 * cell,
                top + r as f64 * cell,
                cell,
                cell,
                hex(fill),
                xml(self.rows.get(r).map_or("", String::as_str)),
                xml(self.cols.get(c).map_or("", String::as_str)),
            ));
            // The value in the cell where it fits, as the app shows it.
            if cell >= 28.0 {
                s.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{}\">{v:.2}</text>\n",
                    left + (c as f64 + 0.5) * cell,
                    top + (r as f64 + 0.5) * cell + 4.0,
                    hex(super::palette::text_on(fill)),
                ));
            }
        }
        // Names where they fit: every row and column when cells are large
        // enough, else about ten of each.
        let every = |n: usize| if cell >= 14.0 { 1 } else { n.div_ceil(10).max(1) };
        for (r, name) in self.rows.iter().enumerate().step_by(every(nr)) {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                left - 6.0,
                top + (r as f64 + 0.5) * cell + 4.0,
                xml(name)
            ));
        }
        for (c, name) in self.cols.iter().enumerate().step_by(every(nc)) {
            s.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                left + (c as f64 + 0.5) * cell,
                top + gh + 16.0,
                xml(name)
            ));
        }
        // The colour bar.
        let (bx, by, bw) = (left, top + gh + 36.0, gw.clamp(120.0, 300.0));
        for i in 0..50 {
            let t = i as f32 / 49.0;
            s.push_str(&format!(
                "<rect x=\"{:.2}\" y=\"{by}\" width=\"{:.2}\" height=\"12\" fill=\"{}\"/>\n",
                bx + bw * i as f64 / 50.0,
                bw / 50.0 + 0.5,
                hex(super::palette::viridis(t))
            ));
        }
        s.push_str(&format!(
            "<text x=\"{bx}\" y=\"{:.1}\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} {}</text>\n</svg>\n",
            by + 28.0,
            tick_label(self.lo),
            bx + bw,
            by + 28.0,
            tick_label(self.hi),
            xml(&self.value_label)
        ));
        s
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn hex(c: egui::Color32) -> String {
    format!("#{:02x}{:02x}{:02x}", c.r(), c.g(), c.b())
}

/// An SVG line's stroke attributes for a look: its colour, width (0.8 of
/// the screen's points, at least 1), opacity and dashes.
fn stroke(look: &Look) -> String {
    let mut s = format!(
        " stroke=\"{}\" stroke-width=\"{:.1}\"",
        hex(look.on_white()),
        (0.8 * look.width).max(1.0)
    );
    if look.opacity < 1.0 {
        s.push_str(&format!(" stroke-opacity=\"{:.2}\"", look.opacity));
    }
    match look.pattern {
        Pattern::Dashed => s.push_str(" stroke-dasharray=\"5 3\""),
        Pattern::Dotted => s.push_str(" stroke-dasharray=\"1 3\" stroke-linecap=\"round\""),
        Pattern::Solid | Pattern::Markers => {}
    }
    s
}

/// An SVG marker (a scatter's point) of `look` at (x, y).
fn marker(look: &Look, x: f64, y: f64) -> String {
    format!(
        "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\" fill=\"{}\"/>\n",
        hex(look.on_white())
    )
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// About five round tick values covering [lo, hi].
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

fn tick_label(v: f64) -> String {
    if v.abs() >= 1000.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

impl Figure {
    /// Long format: one row per point (series, x, y); the marks first as
    /// rows with an empty y.
    pub fn csv(&self) -> String {
        let mut out = format!("series,{},{}\n", csv_field(&self.x_label), csv_field(&self.y_label));
        for m in &self.marks {
            out.push_str(&format!("{},{},\n", csv_field(&m.name), m.x));
        }
        for s in &self.series {
            let name = csv_field(&s.name);
            for [x, y] in &s.points {
                out.push_str(&format!("{name},{x},{y}\n"));
            }
        }
        out
    }

    /// A standalone SVG of the figure: axes with ticks, every series as a
    /// polyline (binned past `MAX_LINE_POINTS` where `bin` says), the
    /// marks, a legend and the title.
    pub fn svg(&self) -> String {
        let binned = Figure {
            series: self
                .series
                .iter()
                .map(|s| Series {
                    points: match s.look.pattern {
                        Pattern::Markers => s.points.clone(),
                        _ if !self.bin => s.points.clone(),
                        _ => bin_points(&s.points, MAX_LINE_POINTS),
                    },
                    ..s.clone()
                })
                .collect(),
            ..self.clone()
        };
        binned.svg_as_is()
    }

    fn svg_as_is(&self) -> String {
        let (w, h) = (760.0, 440.0);
        let (left, right, top, bottom) = (70.0, 220.0, 40.0, 55.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let finite = |v: f64| v.is_finite();
        let xs = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p[0]))
            .chain(self.marks.iter().map(|m| m.x))
            .filter(|&x| finite(x) && (!self.log_x || x > 0.0));
        let ys = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p[1]))
            .filter(|&y| finite(y));
        let fold = |it: &mut dyn Iterator<Item = f64>| {
            it.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)))
        };
        let (mut x0, mut x1) = fold(&mut xs.into_iter());
        let (mut y0, mut y1) = fold(&mut ys.into_iter());
        if !(x0.is_finite() && x1.is_finite()) {
            (x0, x1) = (0.0, 1.0);
        }
        if !(y0.is_finite() && y1.is_finite()) {
            (y0, y1) = (0.0, 1.0);
        }
        y0 = y0.min(0.0);
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let tx = |x: f64| -> f64 {
            if self.log_x {
                let (a, b) = (x0.max(1e-12).log2(), x1.max(1e-12).log2());
                left + pw * (x.max(1e-12).log2() - a) / (b - a).max(1e-12)
            } else {
                left + pw * (x - x0) / (x1 - x0).max(1e-12)
            }
        };
        let ty = |y: f64| top + ph * (1.0 - (y - y0) / (y1 - y0));
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{left}\" y=\"22\" font-size=\"15\">{}</text>\n",
            xml(&self.title)
        );
        // Axes and ticks.
        s.push_str(&format!(
            "<rect x=\"{left}\" y=\"{top}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\n"
        ));
        let xticks = if self.log_x {
            let mut t = Vec::new();
            let mut v = 2f64.powf(x0.max(1e-12).log2().ceil());
            while v <= x1 * 1.0001 {
                t.push(v);
                v *= 2.0;
            }
            t
        } else {
            ticks(x0, x1)
        };
        for x in xticks {
            let px = tx(x);
            s.push_str(&format!(
                "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
                top + ph,
                top + ph + 16.0,
                tick_label(x)
            ));
        }
        for y in ticks(y0, y1) {
            let py = ty(y);
            s.push_str(&format!(
                "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#ddd\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
                left + pw,
                left - 6.0,
                py + 4.0,
                tick_label(y)
            ));
        }
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
            left + pw / 2.0,
            h - 12.0,
            xml(&self.x_label),
            top + ph / 2.0,
            xml(&self.y_label)
        ));
        for m in &self.marks {
            let px = tx(m.x);
            s.push_str(&format!(
                "<line x1=\"{px:.1}\" y1=\"{top}\" x2=\"{px:.1}\" y2=\"{:.1}\"{}/>\n",
                top + ph,
                stroke(&m.look)
            ));
        }
        for series in &self.series {
            let shown = series
                .points
                .iter()
                .filter(|p| p[0].is_finite() && p[1].is_finite() && (!self.log_x || p[0] > 0.0));
            if series.look.pattern == Pattern::Markers {
                shown.for_each(|p| s.push_str(&marker(&series.look, tx(p[0]), ty(p[1]))));
                continue;
            }
            let pts: Vec<String> = shown.map(|p| format!("{:.1},{:.1}", tx(p[0]), ty(p[1]))).collect();
            s.push_str(&format!(
                "<polyline fill=\"none\"{} points=\"{}\"/>\n",
                stroke(&series.look),
                pts.join(" ")
            ));
        }
        // Legend: series, then marks, each drawn as in the figure.
        let lx = left + pw + 14.0;
        let entries = self
            .series
            .iter()
            .map(|x| (&x.name, &x.look))
            .chain(self.marks.iter().map(|m| (&m.name, &m.look)));
        for (k, (name, look)) in entries.enumerate() {
            let y = top + 10.0 + 18.0 * k as f64;
            if look.pattern == Pattern::Markers {
                s.push_str(&marker(look, lx + 11.0, y));
                s.push_str(&format!(
                    "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                    lx + 28.0,
                    y + 4.0,
                    xml(name)
                ));
                continue;
            }
            s.push_str(&format!(
                "<line x1=\"{lx}\" y1=\"{y}\" x2=\"{:.1}\" y2=\"{y}\"{}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                lx + 22.0,
                stroke(look),
                lx + 28.0,
                y + 4.0,
                xml(name)
            ));
        }
        s.push_str("</svg>\n");
        s
    }
}

/// What a user asked to export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Svg,
    Png,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
    fn mime(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Svg => "image/svg+xml",
            Format::Png => "image/png",
        }
    }
}

/// A name as part of a file name: ASCII letters and digits, lowercased,
/// each run of anything else one '-' ("NoPE (s = 1)" -> "nope-s-1").
pub fn file_stem(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// What a view exports: a plot of lines or a map.
#[derive(Debug, Clone)]
enum Exportable {
    Figure(Figure),
    Grid(Grid),
}

impl Exportable {
    fn stem(&self) -> &str {
        match self {
            Exportable::Figure(f) => &f.stem,
            Exportable::Grid(g) => &g.stem,
        }
    }
    fn csv(&self) -> String {
        match self {
            Exportable::Figure(f) => f.csv(),
            Exportable::Grid(g) => g.csv(),
        }
    }
    fn svg(&self) -> String {
        match self {
            Exportable::Figure(f) => f.svg(),
            Exportable::Grid(g) => g.svg(),
        }
    }
}

/// A request from a view, waiting for the app to handle it.
#[derive(Debug, Clone)]
struct Request {
    what: Exportable,
    format: Format,
    /// The plot's rectangle on screen (for PNG).
    rect: egui::Rect,
}

fn request_id() -> egui::Id {
    egui::Id::unique("nopescope export request")
}

/// CSV / SVG / PNG buttons under a plot; `figure` is built only when one
/// is clicked.
pub fn buttons(ui: &mut egui::Ui, plot_rect: egui::Rect, figure: impl FnOnce() -> Figure) {
    if let Some(format) = format_buttons(ui, true, text::EXPORT_CSV_HELP) {
        request(ui, Exportable::Figure(figure()), format, plot_rect);
    }
}

/// The same under a map of `cells` cells (SVG only up to `SVG_MAX_CELLS`).
pub fn grid_buttons(ui: &mut egui::Ui, map_rect: egui::Rect, cells: usize, grid: impl FnOnce() -> Grid) {
    if let Some(format) = format_buttons(ui, cells <= SVG_MAX_CELLS, text::EXPORT_GRID_CSV_HELP) {
        request(ui, Exportable::Grid(grid()), format, map_rect);
    }
}

/// `csv_help`: what the CSV holds (a plot's points or a map's cells).
fn format_buttons(ui: &mut egui::Ui, svg: bool, csv_help: &'static str) -> Option<Format> {
    let mut format = None;
    ui.horizontal(|ui| {
        ui.label(text::EXPORT);
        for (f, label, help) in [
            (Format::Csv, "CSV", csv_help),
            (Format::Svg, "SVG", text::EXPORT_SVG_HELP),
            (Format::Png, "PNG", text::EXPORT_PNG_HELP),
        ] {
            if f == Format::Svg && !svg {
                continue;
            }
            if ui.small_button(label).on_hover_text(help).clicked() {
                format = Some(f);
            }
        }
    });
    format
}

fn request(ui: &egui::Ui, what: Exportable, format: Format, rect: egui::Rect) {
    let request = Request { what, format, rect };
    ui.ctx().data_mut(|d| d.insert_temp(request_id(), Some(request)));
}

fn file_request_id() -> egui::Id {
    egui::Id::unique("nopescope save file request")
}

/// Offers a file to save, from anywhere in the app: natively the save
/// dialog opens with `name` in the working folder, on the web it downloads.
pub fn save_file(ctx: &egui::Context, name: impl Into<String>, bytes: Vec<u8>, mime: &'static str) {
    let ready = Ready {
        name: name.into(),
        bytes,
        mime,
    };
    ctx.data_mut(|d| d.insert_temp(file_request_id(), Some(ready)));
}

/// A file ready to save: its name and bytes.
#[derive(Debug, Clone)]
pub struct Ready {
    pub name: String,
    pub bytes: Vec<u8>,
    pub mime: &'static str,
}

/// The app's side: takes requests, waits for the screenshot of a PNG, and
/// shows the save dialog natively.
#[derive(Default)]
pub struct Exporter {
    /// A PNG waiting for its screenshot, and where the screenshot lands.
    waiting: Option<Request>,
    shot: std::sync::Arc<std::sync::Mutex<Option<std::sync::Arc<egui::ColorImage>>>>,
    /// Natively: a file waiting for the user to confirm its path.
    dialog: Option<(Ready, String, bool)>,
    /// Natively: the folder browser, when the user asked to pick where.
    #[cfg(not(target_arch = "wasm32"))]
    browse: Option<super::views::folder_dialog::FolderDialog>,
    /// The last outcome ("Saved ...", or an error), shown in the status bar.
    pub message: Option<(String, bool)>,
    /// What was saved last (tests read it).
    pub last_saved: Option<Ready>,
}

impl Exporter {
    /// Handles this frame's request and screenshot; call once per frame
    /// after the views.
    pub fn update(&mut self, ctx: &egui::Context) {
        if let Some(r) = ctx
            .data_mut(|d| d.remove_temp::<Option<Request>>(request_id()))
            .flatten()
        {
            let name = format!("{}.{}", r.what.stem(), r.format.extension());
            match r.format {
                Format::Csv => self.ready(r.what.csv().into_bytes(), name, Format::Csv),
                Format::Svg => self.ready(r.what.svg().into_bytes(), name, Format::Svg),
                Format::Png => {
                    let slot = std::sync::Arc::clone(&self.shot);
                    let repaint = ctx.clone();
                    ctx.request_screenshot(move |image| {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(image);
                        repaint.request_repaint();
                    });
                    self.waiting = Some(r);
                }
            }
        }
        if self.waiting.is_some() {
            let shot = self.shot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let (Some(image), Some(r)) = (shot, self.waiting.take()) {
                let ppp = ctx.pixels_per_point();
                let name = format!("{}.png", r.what.stem());
                match crop_png(&image, r.rect, ppp) {
                    Ok(bytes) => self.ready(bytes, name, Format::Png),
                    Err(e) => self.message = Some((e, true)),
                }
            } else {
                ctx.request_repaint();
            }
        }
        if let Some(ready) = ctx
            .data_mut(|d| d.remove_temp::<Option<Ready>>(file_request_id()))
            .flatten()
        {
            self.offer(ready);
        }
        self.dialog(ctx);
    }

    fn ready(&mut self, bytes: Vec<u8>, name: String, format: Format) {
        self.offer(Ready {
            name,
            bytes,
            mime: format.mime(),
        });
    }

    /// Saves natively through the dialog, downloads on the web.
    fn offer(&mut self, ready: Ready) {
        #[cfg(target_arch = "wasm32")]
        {
            self.message = Some(match super::web::download(&ready.name, &ready.bytes, ready.mime) {
                Ok(()) => (text::downloaded(&ready.name), false),
                Err(e) => (e, true),
            });
            self.last_saved = Some(ready);
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let dir = std::env::current_dir().unwrap_or_default();
            let path = dir.join(&ready.name).display().to_string();
            self.dialog = Some((ready, path, false));
        }
    }

    /// Saves the file in the open dialog to `path` (what its Save button
    /// does; tests call it directly).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn save_to(&mut self, path: &str) -> Result<(), String> {
        let Some((ready, _, _)) = self.dialog.take() else {
            return Err("nothing to save".into());
        };
        let path = std::path::Path::new(path.trim());
        let result = crate::model::files::write_atomic(path, &ready.bytes).map_err(|e| e.to_string());
        self.message = Some(match &result {
            Ok(()) => (text::saved_to(&path.display().to_string()), false),
            Err(e) => (e.clone(), true),
        });
        self.last_saved = Some(ready);
        result
    }

    /// The path the save dialog proposes, when it is open.
    pub fn proposed_path(&self) -> Option<&str> {
        self.dialog.as_ref().map(|d| d.1.as_str())
    }

    fn dialog(&mut self, ctx: &egui::Context) {
        #[cfg(not(target_arch = "wasm32"))]
        {
            let Some((ready, path, replace)) = &mut self.dialog else {
                return;
            };
            let mut action = None;
            let browsing = self.browse.is_some();
            let exists = std::path::Path::new(path.trim()).exists();
            egui::Modal::new(egui::Id::unique("nopescope save dialog")).show(ctx, |ui| {
                ui.heading(text::save_title(&ready.name));
                let label = ui.label(text::SAVE_PATH);
                ui.add(egui::TextEdit::singleline(path).desired_width(520.0))
                    .labelled_by(label.id);
                if ui.button(text::BROWSE).clicked() {
                    let start = std::path::Path::new(path.trim())
                        .parent()
                        .unwrap_or(std::path::Path::new("."));
                    self.browse = Some(super::views::folder_dialog::FolderDialog::new(
                        start,
                        super::views::folder_dialog::Purpose::SaveHere,
                    ));
                }
                if exists {
                    ui.checkbox(replace, text::REPLACE_FILE);
                }
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(!exists || *replace, egui::Button::new(text::SAVE))
                        .clicked()
                    {
                        action = Some(true);
                    }
                    if ui.button(text::CANCEL).clicked() || ui.input(|i| i.key_pressed(egui::Key::Escape)) {
                        action = Some(false);
                    }
                });
            });
            // The folder browser over the save dialog: its choice keeps
            // the file's name.
            use super::views::folder_dialog::Choice;
            match self.browse.as_mut().and_then(|b| b.show(ctx)) {
                Some(Choice::Open(dir)) => {
                    let name = std::path::Path::new(path.trim())
                        .file_name()
                        .map_or_else(|| ready.name.clone().into(), |n| n.to_os_string());
                    *path = dir.join(name).display().to_string();
                    self.browse = None;
                }
                Some(Choice::Cancel) => self.browse = None,
                None => {}
            }
            if browsing {
                // Keys and clicks belonged to the browser this frame.
                action = None;
            }
            match action {
                Some(true) => {
                    let path = path.clone();
                    let _ = self.save_to(&path);
                }
                Some(false) => self.dialog = None,
                None => {}
            }
        }
        #[cfg(target_arch = "wasm32")]
        let _ = ctx;
    }
}

/// The part of a screenshot inside `rect` (points), as PNG bytes.
fn crop_png(image: &egui::ColorImage, rect: egui::Rect, ppp: f32) -> Result<Vec<u8>, String> {
    let [w, h] = image.size;
    let x0 = ((rect.min.x * ppp).floor().max(0.0) as usize).min(w);
    let y0 = ((rect.min.y * ppp).floor().max(0.0) as usize).min(h);
    let x1 = ((rect.max.x * ppp).ceil().max(0.0) as usize).clamp(x0, w);
    let y1 = ((rect.max.y * ppp).ceil().max(0.0) as usize).clamp(y0, h);
    if x1 == x0 || y1 == y0 {
        return Err(text::EXPORT_EMPTY.into());
    }
    let mut rgba = Vec::with_capacity((x1 - x0) * (y1 - y0) * 4);
    for y in y0..y1 {
        for x in x0..x1 {
            rgba.extend_from_slice(&image.pixels[y * w + x].to_array());
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, (x1 - x0) as u32, (y1 - y0) as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut writer = enc.write_header().map_err(|e| e.to_string())?;
        writer.write_image_data(&rgba).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The value of the first `name="..."` in `markup` (for tests of SVG and
/// HTML written here).
#[cfg(test)]
pub(crate) fn attribute_value(markup: &str, name: &str) -> String {
    let start = format!("{name}=\"");
    markup
        .split(start.as_str())
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no {name}=\"...\" in {markup}"))
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_plain_file_stems() {
        assert_eq!(file_stem("NoPE (s = 1)"), "nope-s-1");
        assert_eq!(
            file_stem("“B”: scales shipped with the model (searched at 4L)"),
            "b-scales-shipped-with-the-model-searched-at-4l"
        );
        assert_eq!(file_stem("  --é--  "), "");
        assert_eq!(file_stem("RoPE twin"), "rope-twin");
    }

    #[test]
    fn a_grid_exports_one_row_and_one_square_per_cell() {
        let g = Grid {
            stem: "m".into(),
            title: "A <map>".into(),
            row_label: "layer".into(),
            col_label: "head".into(),
            value_label: "bits".into(),
            rows: vec!["layer 0".into(), "layer 1".into()],
            cols: vec!["h0".into(), "h1".into(), "h2".into()],
            values: vec![0.0, 1.0, 2.0, 3.0, f64::NAN, 5.0],
            lo: 0.0,
            hi: 5.0,
            log_colour: false,
        };
        let csv = g.csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 7);
        assert_eq!(lines[0], "layer,head,bits");
        assert_eq!(lines[2], "layer 0,h1,1");
        assert_eq!(lines[5], "layer 1,h1,", "an empty cell has no value");
        let svg = g.svg();
        assert!(svg.starts_with("<svg") && svg.contains("A &lt;map&gt;"));
        // Five cells (the empty one drawn as nothing), 50 colour-bar steps.
        assert_eq!(svg.matches("<rect").count(), 1 + 5 + 50);
        assert!(
            svg.contains(&hex(crate::app::palette::viridis(1.0))),
            "the top of the scale"
        );
    }

    fn figure() -> Figure {
        Figure {
            stem: "t".into(),
            title: "a <title>".into(),
            x_label: "length".into(),
            y_label: "bits".into(),
            series: vec![
                Series {
                    name: "NoPE, mean".into(),
                    look: Look::line(egui::Color32::from_rgb(0, 0x72, 0xB2)),
                    points: vec![[1.0, 2.0], [2.0, 3.5]],
                },
                Series {
                    name: "NoPE, layer 0, head 0".into(),
                    look: Look::head(egui::Color32::from_rgb(0, 0x72, 0xB2)),
                    points: vec![[1.0, 2.5]],
                },
            ],
            marks: vec![Mark {
                name: "L".into(),
                x: 2.0,
                look: Look::training_length(),
            }],
            log_x: false,
            bin: false,
        }
    }

    #[test]
    fn csv_has_every_point_and_quotes_commas() {
        let csv = figure().csv();
        assert_eq!(
            csv,
            "series,length,bits\nL,2,\n\"NoPE, mean\",1,2\n\"NoPE, mean\",2,3.5\n\"NoPE, layer 0, head 0\",1,2.5\n"
        );
    }

    /// A long line (a row over 5000 keys) keeps every point in its CSV
    /// and is drawn in at most MAX_LINE_POINTS bins in its SVG, each the
    /// mean of its points; a short one is drawn as it is.
    #[test]
    fn a_long_line_keeps_every_point_in_csv_and_bins_in_svg() {
        let ys: Vec<f32> = (0..5000).map(|i| (i % 7) as f32).collect();
        let mut f = figure();
        f.series.truncate(1);
        f.series[0].points = indexed(&ys);
        assert_eq!(f.csv().lines().count(), 1 + 1 + 5000);
        let line = |svg: &str| attribute_value(svg, "points");
        assert_eq!(
            line(&f.svg()).split(' ').count(),
            5000,
            "a figure that does not bin (an objective's curve)"
        );
        f.bin = true;
        assert_eq!(
            line(&f.svg()).split(' ').count(),
            5000usize.div_ceil(5000usize.div_ceil(MAX_LINE_POINTS))
        );
        let bins = bin_points(&f.series[0].points, MAX_LINE_POINTS);
        assert_eq!(bins.len(), 1000);
        // Bins of 5 consecutive keys: at their middle key, their mean.
        assert_eq!(bins[0], [2.0, 2.0]);
        assert_eq!(bins[1], [7.0, (5.0 + 6.0 + 0.0 + 1.0 + 2.0) / 5.0]);
        assert_eq!(bin_points(&bins[..3], MAX_LINE_POINTS), bins[..3].to_vec());
        // The plots' own binning, from the values, draws the same points.
        assert_eq!(crate::app::views::entropy::binned(&ys), bins);
    }

    /// A scatter's series is a marker per point (and one in the legend),
    /// never a line joining heads in layer order.
    #[test]
    fn svg_draws_a_scatter_as_markers() {
        let mut f = figure();
        f.series[0].look = Look::markers(egui::Color32::from_rgb(0xD5, 0x5E, 0x00));
        let svg = f.svg();
        assert_eq!(svg.matches("<circle").count(), 2 + 1);
        assert_eq!(svg.matches("fill=\"#d55e00\"").count(), 3);
        assert_eq!(svg.matches("<polyline").count(), 1, "only the head's line");
    }

    #[test]
    fn svg_is_escaped_and_draws_each_series_and_mark() {
        let svg = figure().svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;title&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        // Drawn as on screen: the head thin and paler, L dashed in black
        // on the white page (each on the plot and in the legend).
        assert_eq!(svg.matches("stroke=\"#0072b2\"").count(), 2, "the mean");
        assert_eq!(
            svg.matches("stroke=\"#72b1d4\" stroke-width=\"1.0\"").count(),
            2,
            "the head"
        );
        assert_eq!(
            svg.matches("stroke=\"#000000\" stroke-width=\"1.6\" stroke-dasharray")
                .count(),
            2,
            "L"
        );
        assert_eq!(
            svg.matches("stroke-width=\"1.6\"").count(),
            4,
            "the mean and L, twice each"
        );
        let mut log = figure();
        log.log_x = true;
        assert!(log.svg().contains("<polyline"));
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 10.0), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let t = ticks(0.13, 0.97);
        assert!(t.len() >= 3 && t[0] >= 0.13 && *t.last().unwrap() <= 0.97);
    }

    #[test]
    fn crop_keeps_the_rectangle() {
        let mut img = egui::ColorImage::filled([4, 3], egui::Color32::BLACK);
        img.pixels[4 + 1] = egui::Color32::WHITE;
        let png = crop_png(
            &img,
            egui::Rect::from_min_max(egui::pos2(1.0, 1.0), egui::pos2(3.0, 3.0)),
            1.0,
        )
        .unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (2, 2));
        assert_eq!(&buf[..4], &[255, 255, 255, 255]);
        assert!(crop_png(
            &img,
            egui::Rect::from_min_max(egui::pos2(9.0, 9.0), egui::pos2(12.0, 12.0)),
            1.0
        )
        .is_err());
    }
}
