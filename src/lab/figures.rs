//! The figures of `nopescope reproduce`, each written as SVG and PNG:
//! entropy against position, and pass-key accuracy against length.
//! Text is drawn with egui's own font, so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::reproduce::Results;
use super::scales_report::ScaleReport;
use crate::model::error::{Error, Result};

const FONT: &str = "sans-serif";
const SIZE: (u32, u32) = (960, 600);

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; registering it cannot meet a missing file.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, epaint_default_fonts::UBUNTU_LIGHT);
    });
}

fn draw_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input(format!("{}: drawing failed: {e}", path.display()))
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// A line series: name, points, dashed (thin) or solid.
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
    thin: bool,
}

struct Plot<'a> {
    title: &'a str,
    x_desc: &'a str,
    y_desc: &'a str,
    x_range: (f64, f64),
    y_range: (f64, f64),
    series: Vec<Series>,
    /// A vertical marker (x, label).
    marker: Option<(f64, String)>,
    legend: SeriesLabelPosition,
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, plot: &Plot) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(plot.title, (FONT, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (plot.x_range.0..plot.x_range.1).log_scale(),
            plot.y_range.0..plot.y_range.1,
        )
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(plot.x_desc)
        .y_desc(plot.y_desc)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        // Log axes get a tick at every integer multiple; label only those
        // that start with 1, 2 or 5 so the labels never collide.
        .x_label_formatter(&|x| {
            let lead = format!("{x:.0}").chars().next().unwrap_or('0');
            if matches!(lead, '1' | '2' | '5') {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .draw()
        .map_err(|x| e(&x))?;
    if let Some((x, label)) = &plot.marker {
        let grey = RGBColor(90, 90, 90);
        chart
            .draw_series(LineSeries::new(
                vec![(*x, plot.y_range.0), (*x, plot.y_range.1)],
                grey.stroke_width(2),
            ))
            .map_err(|x| e(&x))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], grey.stroke_width(2)));
    }
    for (i, s) in plot.series.iter().enumerate() {
        // The reference curve (log2) is black; the rest take the palette.
        let color = if s.name.starts_with("log2") {
            BLACK
        } else {
            COLORS[i % COLORS.len()]
        };
        let style = if s.thin {
            color.stroke_width(1)
        } else {
            color.stroke_width(3)
        };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|x| e(&x))?
            .label(s.name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        if !s.thin && s.points.len() <= 16 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|x| e(&x))?;
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(plot.legend.clone())
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Writes `<stem>.svg` and `<stem>.png` into `dir`.
fn write_both(dir: &Path, stem: &str, plot: &Plot) -> Result<()> {
    register_font();
    write_pair(dir, stem, |p: &Path, svg: bool| {
        if svg {
            draw(SVGBackend::new(p, SIZE).into_drawing_area(), plot)
        } else {
            draw(BitMapBackend::new(p, SIZE).into_drawing_area(), plot)
        }
    })
}

/// `<stem>.svg` and `<stem>.png` drawn by `draw(path, svg)` to temporary
/// names (`files::temp_beside`), and put in place only once both are
/// drawn: a figure that fails to draw leaves the old pair whole (not a new
/// SVG beside an old PNG) and no temporary behind.
fn write_pair<E: std::fmt::Display>(
    dir: &Path,
    stem: &str,
    draw: impl Fn(&Path, bool) -> std::result::Result<(), E>,
) -> Result<()> {
    let pair: Vec<(PathBuf, PathBuf, bool)> = [("svg", true), ("png", false)]
        .into_iter()
        .map(|(ext, svg)| {
            let path = dir.join(format!("{stem}.{ext}"));
            (path.clone(), crate::model::files::temp_beside(&path), svg)
        })
        .collect();
    let clean = || {
        for (_, tmp, _) in &pair {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for (path, _, _) in &pair {
        crate::model::files::check_replaceable(path)?;
    }
    for (path, tmp, svg) in &pair {
        if let Err(x) = draw(tmp, *svg) {
            clean();
            return Err(draw_error(path, x));
        }
    }
    for (path, tmp, _) in &pair {
        if let Err(x) = std::fs::rename(tmp, path) {
            clean();
            return Err(Error::io(path, x));
        }
    }
    Ok(())
}

pub const ENTROPY_FIGURE: &str = "entropy-by-position";
pub const PASSKEY_FIGURE: &str = "passkey-by-length";

/// Both figures of the results, into `dir`.
pub fn write_figures(r: &Results, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
    let l = r.training_length as f64;
    let max_x = r
        .entropy_by_position
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(2.0, f64::max);
    let max_y = r
        .entropy_by_position
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(1.0, f64::max);
    let series = r
        .entropy_by_position
        .iter()
        .map(|c| Series {
            name: c.name.clone(),
            points: c.points.clone(),
            thin: !c.name.contains("mean") && !c.name.starts_with("log2"),
        })
        .collect();
    write_both(
        dir,
        ENTROPY_FIGURE,
        &Plot {
            title: "Attention entropy against position (validation text)",
            x_desc: "query position i",
            y_desc: "entropy (bits)",
            x_range: (1.0, max_x * 1.05),
            y_range: (0.0, max_y * 1.1),
            series,
            marker: Some((l, format!("training length L = {}", r.training_length))),
            legend: SeriesLabelPosition::LowerRight,
        },
    )?;
    let lengths: Vec<f64> = r.lengths.iter().map(|&x| x as f64).collect();
    let row = |name: String, rr: &super::reproduce::Row| Series {
        name,
        points: lengths
            .iter()
            .zip(&rr.passkey)
            .map(|(&x, p)| (x, 100.0 * p.accuracy))
            .collect(),
        thin: false,
    };
    let min_x = lengths.first().copied().unwrap_or(1.0);
    let max_x = lengths.last().copied().unwrap_or(2.0);
    write_both(
        dir,
        PASSKEY_FIGURE,
        &Plot {
            title: "Pass-key retrieval against length",
            x_desc: "document length (tokens)",
            y_desc: "accuracy (%)",
            x_range: (min_x / 1.3, max_x * 1.3),
            y_range: (0.0, 105.0),
            series: vec![
                row("NoPE".into(), &r.nope),
                row("NoPE, best uniform scale".into(), &r.nope_best),
                row("RoPE".into(), &r.rope),
            ],
            marker: Some((l, format!("training length L = {}", r.training_length))),
            legend: SeriesLabelPosition::LowerLeft,
        },
    )
}

pub const HEATMAP_FIGURE: &str = "passkey-length-by-depth";
pub const SCATTER_FIGURE: &str = "scale-against-entropy";

/// Cividis-like colour for x in [0, 1]: dark blue to yellow, readable in
/// greyscale and by the common colour-vision deficiencies.
fn cividis(x: f64) -> RGBColor {
    const STOPS: [(f64, (f64, f64, f64)); 5] = [
        (0.0, (0.0, 34.0, 78.0)),
        (0.25, (65.0, 77.0, 108.0)),
        (0.5, (124.0, 123.0, 120.0)),
        (0.75, (188.0, 175.0, 111.0)),
        (1.0, (255.0, 234.0, 70.0)),
    ];
    let x = x.clamp(0.0, 1.0);
    let i = STOPS.iter().position(|s| s.0 >= x).unwrap_or(4).max(1);
    let (x0, a) = STOPS[i - 1];
    let (x1, b) = STOPS[i];
    let t = (x - x0) / (x1 - x0);
    let mix = |p: f64, q: f64| (p + (q - p) * t).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Panels of pass-key accuracy, length (columns) by depth (rows).
fn draw_heatmap<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    lengths: &[usize],
    panels: &[(String, Vec<Vec<f64>>)],
    l: usize,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let (root, legend) = root.split_horizontally(SIZE.0 - 90);
    let areas = root.split_evenly((2, panels.len().div_ceil(2).max(1)));
    for (area, (name, cells)) in areas.iter().zip(panels) {
        let depths = cells.first().map_or(0, Vec::len);
        let mut chart = ChartBuilder::on(area)
            .caption(name, (FONT, 18))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(0..lengths.len(), 0..depths)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(lengths.len() + 1)
            .y_labels(depths + 1)
            .x_label_formatter(&|&k| {
                lengths
                    .get(k)
                    .map(|&x| if x == l { format!("{x} (L)") } else { x.to_string() })
                    .unwrap_or_default()
            })
            .y_label_formatter(&|&d| {
                if d < depths {
                    format!("{:.1}", d as f64 / depths as f64)
                } else {
                    String::new()
                }
            })
            .label_style((FONT, 12))
            .draw()
            .map_err(|x| e(&x))?;
        chart
            .draw_series(cells.iter().enumerate().flat_map(|(k, col)| {
                col.iter().enumerate().map(move |(d, &acc)| {
                    let c = if acc.is_nan() {
                        RGBColor(220, 220, 220)
                    } else {
                        cividis(acc)
                    };
                    Rectangle::new([(k, d), (k + 1, d + 1)], c.filled())
                })
            }))
            .map_err(|x| e(&x))?;
    }
    // The colour legend: 0% at the bottom, 100% at the top.
    let h = SIZE.1 as i32 - 80;
    for i in 0..h {
        let c = cividis(1.0 - i as f64 / h as f64);
        legend
            .draw(&Rectangle::new([(20, 40 + i), (44, 41 + i)], c.filled()))
            .map_err(|x| e(&x))?;
    }
    let style = (FONT, 14).into_font();
    legend
        .draw(&Text::new("100%", (46, 34), style.clone()))
        .map_err(|x| e(&x))?;
    legend
        .draw(&Text::new("0%", (46, 40 + h - 8), style))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

fn draw_scatter<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, r: &ScaleReport) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |x: &dyn std::fmt::Display| x.to_string();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let xs = r.scatter.iter().map(|p| p.entropy_bits);
    let (x0, x1) = xs
        .clone()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let y1 = r.scatter.iter().map(|p| p.scale as f64).fold(1.1, f64::max);
    let title = format!(
        "Searched scale against entropy at L ({}; Spearman {:.2})",
        r.scatter_of.as_deref().unwrap_or(""),
        r.rank_correlation.unwrap_or(f64::NAN)
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d((x0 - 0.2)..(x1 + 0.2), 0.95..(y1 + 0.1))
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("head's attention entropy at L (bits)")
        .y_desc("searched scale s")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(r.scatter.iter().map(|p| {
            let c = COLORS[p.layer % COLORS.len()];
            EmptyElement::at((p.entropy_bits, p.scale as f64))
                + Circle::new((0, 0), 6, c.filled())
                + Text::new(format!("{}.{}", p.layer, p.head), (8, -8), (FONT, 13).into_font())
        }))
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

/// Draws a figure to a path, as SVG (true) or PNG.
type DrawTo<'a> = dyn Fn(&Path, bool) -> std::result::Result<(), String> + 'a;

/// The heatmap and the scatter of the temperature report, into `dir`.
pub fn write_scale_figures(r: &ScaleReport, dir: &Path) -> Result<()> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|x| Error::io(dir, x))?;
    let Some(repeated) = r.fillers.first() else {
        return Ok(());
    };
    let wanted = [
        "NoPE",
        "NoPE, best uniform scale",
        "NoPE, head scales searched at 4L",
        "RoPE",
    ];
    let panels: Vec<(String, Vec<Vec<f64>>)> = wanted
        .iter()
        .filter_map(|w| repeated.rows.iter().find(|(n, _)| n.starts_with(w)))
        .map(|(n, rows)| (n.clone(), rows.iter().map(|p| p.accuracy_by_depth.clone()).collect()))
        .collect();
    let mut jobs: Vec<(&str, Box<DrawTo>)> = vec![(
        HEATMAP_FIGURE,
        Box::new(|p: &Path, svg: bool| {
            if svg {
                draw_heatmap(
                    SVGBackend::new(p, SIZE).into_drawing_area(),
                    &r.lengths,
                    &panels,
                    r.training_length,
                )
            } else {
                draw_heatmap(
                    BitMapBackend::new(p, SIZE).into_drawing_area(),
                    &r.lengths,
                    &panels,
                    r.training_length,
                )
            }
        }),
    )];
    if !r.scatter.is_empty() {
        jobs.push((
            SCATTER_FIGURE,
            Box::new(|p: &Path, svg: bool| {
                if svg {
                    draw_scatter(SVGBackend::new(p, SIZE).into_drawing_area(), r)
                } else {
                    draw_scatter(BitMapBackend::new(p, SIZE).into_drawing_area(), r)
                }
            }),
        ));
    }
    for (stem, draw) in jobs {
        write_pair(dir, stem, draw)?;
    }
    Ok(())
}
