//! The figures of `nopescope reproduce`, each written as SVG and PNG:
//! entropy against position, and pass-key accuracy against length.
//! Text is drawn with egui's own font, so no system font is needed.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::reproduce::Results;
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
    let svg = dir.join(format!("{stem}.svg"));
    let png = dir.join(format!("{stem}.png"));
    let tmp_svg = dir.join(format!(".{stem}.tmp.svg"));
    let tmp_png = dir.join(format!(".{stem}.tmp.png"));
    draw(SVGBackend::new(&tmp_svg, SIZE).into_drawing_area(), plot).map_err(|x| draw_error(&svg, x))?;
    draw(BitMapBackend::new(&tmp_png, SIZE).into_drawing_area(), plot).map_err(|x| draw_error(&png, x))?;
    std::fs::rename(&tmp_svg, &svg).map_err(|x| Error::io(&svg, x))?;
    std::fs::rename(&tmp_png, &png).map_err(|x| Error::io(&png, x))?;
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
