//! Every colour and line width the app draws with, in one place: the
//! Okabe-Ito colours for series (distinguishable with the common colour
//! vision deficiencies) and viridis for maps (perceptually uniform, readable
//! in grey). A theme is one edit here.

use eframe::egui::Color32;

/// Plain NoPE (all head scales 1).
pub const NOPE: Color32 = Color32::from_rgb(0x00, 0x72, 0xB2); // blue
/// NoPE with the current head scales.
pub const SCALED: Color32 = Color32::from_rgb(0xD5, 0x5E, 0x00); // vermillion
/// The RoPE twin.
pub const ROPE: Color32 = Color32::from_rgb(0x00, 0x9E, 0x73); // bluish green
/// log2(i + 1): the entropy of uniform attention, the ceiling.
pub const CEILING: Color32 = Color32::from_rgb(0x88, 0x88, 0x88);
/// The pass key's position and the chosen query.
pub const KEY: Color32 = Color32::from_rgb(0xF0, 0xE4, 0x42); // yellow
pub const QUERY: Color32 = Color32::from_rgb(0x56, 0xB4, 0xE9); // sky blue
/// Heads pinned beside the selected one, one colour each (`MAX_PINNED`):
/// Okabe-Ito's reddish purple, the one colour of theirs no setting or mark
/// uses; a violet, the one hue left between the settings' blue and that
/// purple (Okabe-Ito's sky blue, first tried, is the query's, and lay
/// beside the NoPE selected head's lightened blue); then Paul Tol's pear,
/// from his light scheme. Three: his pink, the fourth until 2026-12-02, lay
/// beside the reddish purple on a dark background.
const PINNED: [Color32; 3] = [
    Color32::from_rgb(0xCC, 0x79, 0xA7), // reddish purple
    Color32::from_rgb(0x99, 0x88, 0xDD), // violet
    Color32::from_rgb(0xBB, 0xCC, 0x33), // pear
];

/// The colour of the `k`th pinned head (`ViewState::pinned`'s order).
pub fn pinned(k: usize) -> Color32 {
    PINNED[k % PINNED.len()]
}

const _: () = assert!(
    PINNED.len() >= crate::app::state::MAX_PINNED,
    "a colour for every pinned head"
);

/// Text in a mark's colour (a label beside its line): the colour itself on
/// a dark background; on a light one, the colour halfway to black, so the
/// light colours (the pass key's yellow) keep their contrast with white.
pub fn label_colour(colour: Color32, dark_mode: bool) -> Color32 {
    if dark_mode {
        colour
    } else {
        let half = |c: u8| c / 2;
        Color32::from_rgb(half(colour.r()), half(colour.g()), half(colour.b()))
    }
}

/// Outline of a pinned cell in the layer x head map.
pub const PINNED_OUTLINE: Color32 = Color32::from_rgb(0xBB, 0xBB, 0xBB);
/// Outline of the selected cell in the layer x head map, and the dark line
/// inside it that keeps it visible on the brightest cells.
pub const SELECTION: Color32 = Color32::WHITE;
pub const SELECTION_INNER: Color32 = Color32::from_gray(20);
/// Pass-key accuracy map cells not yet run, and lengths too short to hold
/// the format (greys, outside viridis' range).
pub const GRID_PENDING: Color32 = Color32::from_gray(72);
pub const GRID_TOO_SHORT: Color32 = Color32::from_gray(128);
pub const ERROR: Color32 = Color32::from_rgb(0xD5, 0x5E, 0x00);

pub const LINE_WIDTH: f32 = 2.0;
pub const THIN_LINE: f32 = 1.0;

/// A line's dash pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Solid,
    /// The training length, and a pinned head under the second setting.
    Dashed,
    /// The ceiling: a line no curve, pinned head or mark shares.
    Dotted,
    /// A scatter: a marker at each point, no line between them.
    Markers,
}

/// How one line is drawn, the same on screen, in its legend's swatch and
/// in an exported SVG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Look {
    pub colour: Color32,
    pub width: f32,
    /// 1 is the colour itself; less lets what is under it show (a band).
    pub opacity: f32,
    pub pattern: Pattern,
    /// Drawn in the theme's text colour (black in an SVG) instead of
    /// `colour`: a mark no series' colour can be mistaken for.
    pub ink: bool,
}

impl Look {
    /// A series: a setting's curve.
    pub const fn line(colour: Color32) -> Self {
        Look {
            colour,
            width: LINE_WIDTH,
            opacity: 1.0,
            pattern: Pattern::Solid,
            ink: false,
        }
    }

    /// A scatter's markers (each head's scale against its entropy).
    pub const fn markers(colour: Color32) -> Self {
        Look {
            pattern: Pattern::Markers,
            ..Look::line(colour)
        }
    }

    /// A thin line: the ceiling, a pinned head.
    pub const fn thin(colour: Color32) -> Self {
        Look {
            width: THIN_LINE,
            ..Look::line(colour)
        }
    }

    /// The selected head beside its setting's mean: thin, in its setting's
    /// colour mixed towards white (brighter on a dark background, paler on
    /// a light one), so it stands apart from the mean in both themes.
    pub const fn head(colour: Color32) -> Self {
        Look::thin(towards_white(colour, HEAD_TINT))
    }

    /// The training length L on every length axis: dashed, in the text's
    /// colour, so it reads as a mark beside any series (its orange stood
    /// too near the scaled setting's vermillion).
    pub const fn training_length() -> Self {
        Look {
            pattern: Pattern::Dashed,
            ink: true,
            ..Look::line(Color32::GRAY)
        }
    }

    /// A mark at a position (the pass key, the query).
    pub const fn mark(colour: Color32) -> Self {
        Look::line(colour)
    }

    /// The ceiling, log2(i + 1): thin, grey and dotted, so the selected
    /// head (thin, a light colour) lying along it stays told apart.
    pub const fn ceiling() -> Self {
        Look {
            width: 1.5,
            pattern: Pattern::Dotted,
            ..Look::line(CEILING)
        }
    }

    pub const fn dashed(self) -> Self {
        Look {
            pattern: Pattern::Dashed,
            ..self
        }
    }

    /// The colour to paint with on a background of `visuals`' theme.
    pub fn paint(&self, visuals: &eframe::egui::Visuals) -> Color32 {
        let colour = if self.ink {
            visuals.strong_text_color()
        } else if visuals.dark_mode {
            self.colour
        } else {
            on_light(self.colour)
        };
        if self.opacity < 1.0 {
            colour.gamma_multiply(self.opacity)
        } else {
            colour
        }
    }

    /// The colour of text naming the line (a mark's label).
    pub fn label(&self, visuals: &eframe::egui::Visuals) -> Color32 {
        if self.ink {
            visuals.strong_text_color()
        } else {
            label_colour(self.colour, visuals.dark_mode)
        }
    }

    /// The colour in an SVG, on white.
    pub fn on_white(&self) -> Color32 {
        if self.ink {
            Color32::BLACK
        } else {
            on_light(self.colour)
        }
    }

    /// egui_plot's style for the line.
    pub fn style(&self) -> egui_plot::LineStyle {
        match self.pattern {
            Pattern::Solid => egui_plot::LineStyle::Solid,
            Pattern::Dashed => egui_plot::LineStyle::Dashed { length: DASH },
            Pattern::Dotted => egui_plot::LineStyle::Dotted { spacing: DOT_SPACING },
            // (A scatter is drawn as points, not as a line.)
            Pattern::Markers => egui_plot::LineStyle::Solid,
        }
    }
}

/// A line's colour on a light background: the very light colours (the
/// pass key's yellow, 1.2:1 against white) darkened to a mustard that
/// still reads as that colour; the others as they are.
pub fn on_light(c: Color32) -> Color32 {
    if relative_luminance(c) <= LIGHT_LINE {
        return c;
    }
    let darken = |v: u8| (f32::from(v) * (1.0 - LIGHT_DARKEN)).round() as u8;
    Color32::from_rgb(darken(c.r()), darken(c.g()), darken(c.b()))
}

/// Colours brighter than this (WCAG relative luminance) are darkened on a
/// light background: the yellow (0.77) is; the pinned pear (0.53) is not.
const LIGHT_LINE: f32 = 0.6;
/// How far towards black `on_light` takes them: the yellow goes to about
/// 3.6:1 against white (WCAG asks 3:1 of graphics).
const LIGHT_DARKEN: f32 = 0.4;

/// WCAG's relative luminance of an sRGB colour, 0 (black) to 1 (white).
fn relative_luminance(c: Color32) -> f32 {
    let lin = |v: u8| {
        let v = f32::from(v) / 255.0;
        if v <= 0.04045 {
            v / 12.92
        } else {
            ((v + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c.r()) + 0.7152 * lin(c.g()) + 0.0722 * lin(c.b())
}

/// How far towards white the selected head's line is mixed.
const HEAD_TINT: u16 = 45;

/// `c` mixed `percent` of the way towards white.
const fn towards_white(c: Color32, percent: u16) -> Color32 {
    const fn mix(v: u8, percent: u16) -> u8 {
        (v as u16 + (255 - v as u16) * percent / 100) as u8
    }
    Color32::from_rgb(mix(c.r(), percent), mix(c.g(), percent), mix(c.b(), percent))
}

/// A dash's length in points (egui_plot makes the gap 0.62 of it).
pub const DASH: f32 = 6.0;
/// The distance between a dotted line's dots, in points.
pub const DOT_SPACING: f32 = 4.0;

/// A dashed line through `points` painted outside a plot (a legend's
/// swatch, a map's mark), with the dashes and gaps egui_plot draws.
pub fn dashed_line(points: &[eframe::egui::Pos2], stroke: eframe::egui::Stroke) -> Vec<eframe::egui::Shape> {
    eframe::egui::Shape::dashed_line(points, stroke, DASH, DASH * (std::f32::consts::GOLDEN_RATIO - 1.0))
}

/// Viridis at nine evenly spaced stops (0, 1/8, ..., 1).
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [72, 40, 120],
    [62, 74, 137],
    [49, 104, 142],
    [38, 130, 142],
    [31, 158, 137],
    [53, 183, 121],
    [110, 206, 88],
    [253, 231, 37],
];

/// Viridis at t in [0, 1] (clamped; NaN gives the low end), linear between stops.
pub fn viridis(t: f32) -> Color32 {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let x = t * (VIRIDIS.len() - 1) as f32;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |k: usize| (a[k] as f32 + (b[k] as f32 - a[k] as f32) * f).round() as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}

/// `a` moved toward `b` by `t` (clamped to [0, 1]; NaN stays at `a`),
/// channel by channel, opaque.
pub fn mix(a: Color32, b: Color32, t: f32) -> Color32 {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let m = |x: u8, y: u8| (x as f32 + (y as f32 - x as f32) * t).round() as u8;
    Color32::from_rgb(m(a.r(), b.r()), m(a.g(), b.g()), m(a.b(), b.b()))
}

/// Black or white, whichever reads better on `fill`.
pub fn text_on(fill: Color32) -> Color32 {
    let luma = 0.299 * fill.r() as f32 + 0.587 * fill.g() as f32 + 0.114 * fill.b() as f32;
    if luma > 140.0 {
        Color32::BLACK
    } else {
        Color32::WHITE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weak text (hints, notes) as the app sets it: at least 4.5:1
    /// against the light theme's panels (WCAG's ask of body text; it was
    /// 2.9:1) and 3.5:1 against the dark one's (whose own text is 5:1),
    /// and still lighter than the text in both.
    #[test]
    fn weak_text_is_readable_and_still_weaker() {
        use eframe::egui::Visuals;
        let ratio = |a: Color32, b: Color32| {
            let (la, lb) = (relative_luminance(a) + 0.05, relative_luminance(b) + 0.05);
            la.max(lb) / la.min(lb)
        };
        for (mut v, least) in [(Visuals::light(), 4.5), (Visuals::dark(), 3.5)] {
            v.weak_text_alpha = crate::app::WEAK_TEXT_ALPHA;
            let bg = v.panel_fill;
            // The weak colour is premultiplied: painted over the panel.
            let (w, a) = (v.weak_text_color(), v.weak_text_color().a() as f32 / 255.0);
            let over = |c: u8, b: u8| (c as f32 + b as f32 * (1.0 - a)).round() as u8;
            let shown = Color32::from_rgb(over(w.r(), bg.r()), over(w.g(), bg.g()), over(w.b(), bg.b()));
            let (weak, text) = (ratio(shown, bg), ratio(v.text_color(), bg));
            assert!(weak >= least, "{}: weak text {weak:.2}:1", v.dark_mode);
            assert!(weak < text, "{}: weak {weak:.2}, text {text:.2}", v.dark_mode);
        }
    }

    #[test]
    fn mix_runs_from_one_colour_to_the_other() {
        let (a, b) = (Color32::from_rgb(0, 100, 200), Color32::from_rgb(200, 100, 0));
        assert_eq!(mix(a, b, 0.0), a);
        assert_eq!(mix(a, b, 1.0), b);
        assert_eq!(mix(a, b, 0.5), Color32::from_rgb(100, 100, 100));
        assert_eq!(mix(a, b, 7.0), b);
        assert_eq!(mix(a, b, f32::NAN), a);
    }

    #[test]
    fn viridis_ends_and_clamps() {
        assert_eq!(viridis(0.0), Color32::from_rgb(68, 1, 84));
        assert_eq!(viridis(1.0), Color32::from_rgb(253, 231, 37));
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(f32::NAN), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
    }

    #[test]
    fn the_yellow_mark_darkens_on_white_and_nothing_else_does() {
        let contrast = |c: Color32| 1.05 / (relative_luminance(c) + 0.05);
        assert!(contrast(KEY) < 1.5, "the raw yellow is unreadable on white");
        let on = on_light(KEY);
        assert!(contrast(on) >= 3.0, "{on:?}: {:.2}:1", contrast(on));
        // Still yellow: red and green well above blue.
        assert!(on.r() > 2 * on.b() && on.g() > 2 * on.b());
        for c in [NOPE, SCALED, ROPE, CEILING, QUERY].into_iter().chain(PINNED) {
            assert_eq!(on_light(c), c);
        }
        assert_eq!(Look::mark(KEY).on_white(), on);
        assert_eq!(Look::training_length().on_white(), Color32::BLACK);
    }
}
