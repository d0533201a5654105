//! Every sentence and label the user reads, in one place, so wording is
//! reviewed (and one day translated) in one file. Tests find widgets by
//! these same constants.

pub const APP_TITLE: &str = "nopescope: attention without position encoding, past the training length";

// Input
pub const TAB_EXPLORE: &str = "Explore";
pub const TAB_TUNE: &str = "Tune the scales";
pub const TAB_PASSKEY: &str = "Pass-key lab";
pub const TOUR_OPEN: &str = "Walkthrough";
pub const TOUR_HINT: &str = "New here? The walkthrough explains what you see in nine short steps.";
pub const TOUR_HINT_SHORT: &str = "New here? Try the walkthrough.";
pub const SHARE_OPEN: &str = "Share";
pub const START_OVER: &str = "Start over";
pub const DISMISS: &str = "Dismiss";

/// Said of a link naming a model opened by hand, which links do not keep.
pub const LINK_CUSTOM_MODEL: &str = "model: a model you opened is not kept in links; the bundled NoPE model opens";
/// Above the page when a link could not be used in full (a part unreadable, a value out of range).
pub fn link_problems(problems: &str) -> String {
    format!("This link could not be used in full; the rest of it applies. Left out or changed: {problems}.")
}
pub fn dropped_text(name: &str, chars: usize) -> String {
    format!("Your text is now {name} ({chars} characters)")
}
pub fn dropped_scales(name: &str) -> String {
    format!("Head scales loaded from {name} and in use")
}
pub fn dropped_not_text(name: &str) -> String {
    format!("{name} is not UTF-8 text")
}
pub fn dropped_empty(name: &str) -> String {
    format!("{name} holds no text")
}
pub const START_OVER_HELP: &str = "Back to the page as it first opens: the bundled NoPE model, its validation text at 1024 tokens, no scales, the walkthrough closed. Your text, a scales file you loaded, an opened model and a running search stay; Undo brings back what was on screen.";
pub const UNDO_START_OVER: &str = "Undo start over";
pub const BACK_FROM_TOUR: &str = "Back to your view";
pub const BACK_FROM_TOUR_HELP: &str = "Puts back the page as it was before the walkthrough: its model, input, length, head and scales (offered until something changes).";
pub const UNDO_START_OVER_HELP: &str =
    "Brings back the page as it was before Start over (offered until something changes).";
pub const SHARE_HEADING: &str = "Share this view";
pub const SHARE_HELP: &str = "The link holds what the view is made of: the page, model, input (your own text too), length, heads, scales, settings and walkthrough step. Whoever opens it sees this view and can carry on from it (a plot's zoom, log scale and hidden legend entries are not in it).";
pub const SHARE_CUSTOM_MODEL: &str =
    "A model folder you opened yourself is not in the link: it opens the bundled NoPE model instead.";
pub const SHARE_ADDRESS: &str = "Address of the web page";
pub const SHARE_ADDRESS_HINT: &str = "where the page is served, e.g. https://example.org/nopescope/";
pub const SHARE_NO_ADDRESS: &str = "Type the web page's address first: without it the link and the embed code hold only this view (#state=...), which opens nothing on its own.";
pub const SHARE_LINK: &str = "Link";
pub const COPY_LINK: &str = "Copy link";
pub const COPIED: &str = "copied";
pub const COPY_REFUSED: &str = "the browser did not allow copying here: select the text and copy it by hand";
pub fn long_link(chars: usize) -> String {
    format!("This link is {chars} characters long (your own text is in it): some sites cut links past a few thousand characters.")
}
pub const EMBED_HELP: &str = "To show this view in a course page or a slide, paste the embed code into its HTML. The embedded page hides what you tick:";
pub const EMBED_HIDE: &str = "Hide";
pub const EMBED_HIDE_PAGES: &str = "page bar";
pub const EMBED_HIDE_STATUS: &str = "status bar";
pub const EMBED_HIDE_TOUR: &str = "walkthrough";
pub const EMBED_HIDE_CONTROLS: &str = "controls (input, scales, map)";
pub const EMBED_HIDE_ENTROPY: &str = "entropy plot";
pub const EMBED_HIDE_ATTENTION: &str = "attention view";
pub const EMBED_HIDE_AGAINST: &str = "against length";
pub const EMBED_HIDE_DOCUMENT: &str = "one document";
pub const EMBED_HIDE_ACCURACY: &str = "accuracy map";
pub const EMBED_HIDE_SEARCH: &str = "search";
pub const EMBED_HIDE_PRESETS: &str = "presets";
pub const EMBED_HIDE_COMPARE: &str = "compare, and scale against entropy at L";
pub const EMBED_SIZE: &str = "Size";
pub const EMBED_CODE: &str = "Embed code";
pub const COPY_EMBED: &str = "Copy embed code";
pub const EMBED_TITLE: &str = "nopescope: attention and length in transformers without position encoding";

/// The embedded frame's title: what this one shows, so that several on one
/// course page do not all read the same to a screen reader.
pub fn embed_title(what: &str) -> String {
    format!("{EMBED_TITLE}: {what}")
}
pub const EMBED_THREADS: &str = "Inside another site's page the CPU engine runs on one thread (the browser gives an embedded page no shared memory), so long inputs take longer there.";
pub const INPUT_HEADING: &str = "Input";
pub const INPUT_VALIDATION: &str = "Validation text";
pub const INPUT_PASSKEY: &str = "Pass-key document";
pub const INPUT_PASTED: &str = "Your text";
pub const PASTE_HINT: &str = "Paste or type text here";
pub const EDIT_TEXT: &str = "Edit";
pub const EDIT_TEXT_HELP: &str =
    "Open the whole text in an editor. A long text is shown as a preview, which draws only the lines in view; the editor draws all of it, which can make the page slow.";
pub const DONE_EDITING: &str = "Done";
pub const DONE_EDITING_HELP: &str = "Back to the preview of the text";
pub const CLEAR_TEXT: &str = "Clear";
pub const SAMPLE_TEXT_LABEL: &str = "Or try:";
pub const SAMPLE_TEXT: &str = "Moby-Dick's last chapters";
pub const SAMPLE_TEXT_HELP: &str = "Fills in about 24,000 characters of Moby-Dick's last chapters, which the bundled models never saw in training (they learned from speeches and the book's other chapters): a novel, with dialogue, long enough for 16L.";
pub const SAMPLE_FILLER: &str = "The pass-key filler, repeated";
pub const SAMPLE_FILLER_HELP: &str = "The paper's filler (\"The grass is green. The sky is blue. ...\") over and over, with no key, about 24,000 characters. Within L a model that saw it in training predicts it almost perfectly: watch the perplexity as the length passes L, and how much the head scales win back.";
pub const SAMPLE_SHUFFLED: &str = "Moby-Dick's words, shuffled";
pub const SAMPLE_SHUFFLED_HELP: &str = "The same chapters' words in a random order (the same order every time): no grammar, no story. The perplexity is high at every length, yet the entropy climbs with length as on the novel: the distraction comes from the length, not from what the text says.";

/// A sample's button and its hover.
pub fn sample(s: crate::app::models::Sample) -> (&'static str, &'static str) {
    use crate::app::models::Sample;
    match s {
        Sample::Novel => (SAMPLE_TEXT, SAMPLE_TEXT_HELP),
        Sample::Filler => (SAMPLE_FILLER, SAMPLE_FILLER_HELP),
        Sample::Shuffled => (SAMPLE_SHUFFLED, SAMPLE_SHUFFLED_HELP),
    }
}

/// `n` with its thousands separated: 16,384.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Under the user's text: its size, and how much of it the views read:
/// as many of its tokens as the length asks for, or, where it holds fewer
/// (`short`: its token count), all of it (the length line says so too).
pub fn pasted_size(chars: usize, short: Option<usize>) -> String {
    match short {
        Some(tokens) => format!("{} characters, {} tokens", thousands(chars), thousands(tokens)),
        None => format!(
            "{} characters; the views read as many of its tokens as the length asks for",
            thousands(chars)
        ),
    }
}
pub const LENGTH: &str = "Length (tokens)";
pub const LENGTH_HELP: &str =
    "Tokens per stretch of text, 16 to 16384 on a log scale; L marks the length the model was trained on.";
/// `LENGTH_HELP` for the pass-key lab's one document.
pub const DOCUMENT_LENGTH_HELP: &str =
    "Tokens in the pass-key document, 16 to 16384 on a log scale; L marks the length the model was trained on.";
pub const PASSKEY_KEY: &str = "Key";
pub const PASSKEY_DEPTH: &str = "Depth";
pub const MODEL: &str = "Model";
pub const MODEL_NOPE: &str = "NoPE (bundled)";
pub const MODEL_ROPE: &str = "RoPE twin (bundled)";

// Scales
pub const SCALES_HEADING: &str = "Head scales";
pub const UNIFORM_SCALE: &str = "Uniform scale";
pub const UNIFORM_HELP: &str =
    "Multiplies every head's attention scores: s = 1 is the model as trained, s > 1 sharpens attention.";
pub const RESET_SCALES: &str = "Reset to s = 1";
/// A web page reads no paths: there the scales' JSON is pasted.
pub const SCALES_FILE: &str = if cfg!(target_arch = "wasm32") {
    "Head scales (paste a head-scales file's JSON)"
} else {
    "Head-scales file (path or JSON)"
};
/// The same words as the tuning page's (`LOAD_AND_APPLY`): both load a
/// head-scales file and use it.
pub const LOAD_SCALES: &str = LOAD_AND_APPLY;
pub const USE_FILE_SCALES: &str = "Use the loaded per-head scales";

// Views
pub const ENTROPY_HEADING: &str = "Attention entropy against position";
pub const ENTROPY_HELP: &str = "Entropy of each query's attention in bits, mean over stretches of the text. The grey ceiling, log2(i + 1), is attention spread evenly over every earlier token: the most distracted a head can be.";
pub const MEAN_OVER_HEADS: &str = "mean over heads";
pub const CEILING: &str = "ceiling: uniform attention, log2(i + 1)";
pub const TRAINING_LENGTH: &str = "training length L";
pub const LEGEND_HIDE: &str = "Click to hide this line";
pub const LEGEND_SHOW: &str = "Click to show this line again";
pub const THEME: &str = "Theme";
pub const THEME_SYSTEM: &str = "System";
pub const THEME_LIGHT: &str = "Light";
pub const THEME_DARK: &str = "Dark";
pub const THEME_HELP: &str = "Light or dark colours, or the system's. A projector shows the light theme better. A link can set it too: theme=light.";
pub const MAP_HEADING: &str = "Layer × head map";
pub const MAP_ENTROPY: &str = "Mean entropy";
pub const MAP_SHARED: &str = "Same colours at every length";
pub const MAP_SHARED_HOVER: &str = "The colours run from 0 to the ceiling at the longest length, whatever the length: a longer input's map turns brighter where its heads' entropy rose. (\"Mean entropy\" colours each length up to its own ceiling: it shows how near uniform each head is.)";
pub const MAP_RISE: &str = "Rise from L to this length";
/// `pins`: whether the entropy plot, where pinned heads are compared, is
/// on the page (an embed may hide it).
pub fn map_help(pins: bool) -> String {
    const SELECT: &str = "Click a cell to select that head; the other views follow.";
    if !pins {
        return SELECT.into();
    }
    format!(
        "{SELECT} Shift-click, right-click or a long press (or Shift+Enter) pins up to {} more heads to compare in the entropy plot.",
        in_words(crate::app::state::MAX_PINNED)
    )
}

/// A small count in words, as prose writes it ("three"); past ten, digits.
fn in_words(n: usize) -> String {
    const WORDS: [&str; 11] = [
        "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    WORDS.get(n).map_or_else(|| n.to_string(), |w| w.to_string())
}
pub const ATTENTION_HEADING: &str = "Attention of the selected head";
pub const QUERY: &str = "Query position";
/// The query's line in an attention row's legend (the slider is `QUERY`).
pub const QUERY_MARK: &str = "the query";
pub const POOLED_HEADING: &str = "The whole attention pattern";
pub const POOLED_HELP: &str =
    "Every query's attention over every key, pooled to at most 512 × 512 cells: each cell the mean attention of its queries on its keys.";
pub const BEFORE: &str = "NoPE (s = 1)";
/// `BEFORE` for a model with rotary position encoding.
pub const BEFORE_ROPE: &str = "RoPE (s = 1)";
pub const AFTER: &str = "with the current scales";
/// Why the pass-key lab's "with the current scales" is off.
pub const AFTER_NEEDS_SCALES: &str = "The scales in use are all 1 (plain NoPE), the same as the first series: set scales on Explore (Head scales) or Tune the scales.";
/// `AFTER_NEEDS_SCALES` where the shipped scales are offered beside it.
pub const AFTER_NEEDS_SCALES_SHIPPED: &str = "The scales in use are all 1 (plain NoPE), the same as the first series: set scales on Explore (Head scales) or Tune the scales, or use the shipped ones.";
pub const USE_SHIPPED_SCALES: &str = "Use the shipped scales";
pub const USE_SHIPPED_SCALES_HELP: &str = "Puts the per-head scales shipped with the model (searched at 4L) in use on every page, so that this map shows them beside plain NoPE.";

/// Which scales a setting's short name stands for.
pub fn setting_is(setting: &str, scales: &str) -> String {
    format!("\u{201c}{setting}\u{201d}: {scales}")
}
pub const AGAINST_HEADING: &str = "Against length";
/// What the against-length plots measure, and on how much; `base`: the
/// first setting's name (NoPE, or setting B); `lab`: whether the Pass-key
/// lab is in reach (an embed may hide the page bar).
pub fn against_help(windows: usize, trials: usize, base: &str, yours: bool, lab: bool) -> String {
    let text = if yours { "your text" } else { "the validation text" };
    let more = if lab { " (the Pass-key lab measures more)" } else { "" };
    format!(
        "Entropy, perplexity and pass-key accuracy from L/2 to 16L for {base}, the current scales and the RoPE twin. Entropy is the mean over every position and head, and perplexity the model's, on {windows} stretches of {text}; accuracy is over {trials} pass-key documents per length, a quick look{more}."
    )
}
/// The sweep over the user's text, when it is too short for any length.
/// A view's or sweep's input text holds no tokens.
pub const TEXT_EMPTY: &str = "the text is empty: type or paste some text";
pub fn against_text_too_short(tokens: usize, shortest: usize) -> String {
    format!(
        "your text holds {tokens} tokens, and the shortest length of this sweep is {shortest}: paste a longer text, or choose the validation text"
    )
}
/// The sweep over the user's text, when it holds only its shorter lengths.
pub fn against_text_short(tokens: usize) -> String {
    format!("Your text holds {tokens} tokens: the lengths past it are left out. A longer text reaches further.")
}
/// The against-length entropy plot's ceiling: the mean of log2(i + 1)
/// over a length's positions.
pub const AGAINST_CEILING: &str = "ceiling: uniform attention, mean of log2(i + 1)";
/// The legend table's column of the three plots' own lines.
pub const AGAINST_ALL_HEADS: &str = "all heads";
/// A setting's line in the three against-length plots, as its legend
/// entry is named (the row's own label is the setting's name).
pub fn all_heads_line(setting: &str) -> String {
    format!("{setting}: {AGAINST_ALL_HEADS}")
}
/// The legend table's column of the selected head (entropy only).
pub fn against_head_column(head_name: &str) -> String {
    format!("{head_name} (selected; entropy)")
}
pub const AGAINST_START: &str = "Compute against length";
pub const AGAINST_STOP: &str = "Stop";
pub const AGAINST_STOP_HELP: &str = "Stops computing: the lengths done so far stay, and Resume computes the rest.";
pub const AGAINST_GO_ON: &str = "Resume";
pub const AGAINST_GO_ON_HELP: &str = "Computes the lengths left, going on from those done.";
pub const AGAINST_HIDE: &str = "Hide these plots";

// Status
pub const ENGINE: &str = "Engine";
pub const CANCEL: &str = "Cancel";
pub const WORKING: &str = "computing";
pub const STARTING_ENGINE: &str = "starting the engine";

pub fn head_name(layer: usize, head: usize) -> String {
    format!("layer {layer}, head {head}")
}

pub fn selected(layer: usize, head: usize) -> String {
    format!("Selected: {}", head_name(layer, head))
}

/// Under the selection while the explorer chose it (`ViewState::head_chosen`).
pub const SELECTED_FOR_YOU: &str =
    "Selected for you: past L, this head's gap to the ceiling shrinks the most (its attention spreads out fastest as the text grows). Click a cell to choose another.";

/// After the length line, where the text is shorter than the length.
pub fn tokens_note(tokens: usize) -> String {
    format!("the views read {tokens}, all your text holds")
}

pub fn scales_for_other_shape(layers: usize, heads: usize, model_layers: usize, model_heads: usize) -> String {
    format!(
        "These scales are for {layers} layers × {heads} heads; this model has {model_layers} × {model_heads}. They are kept for a model of their shape."
    )
}

pub fn rise_needs_longer(length: usize, l: usize) -> String {
    format!("The rise from L needs more than L = {l} tokens; this input has {length}. Choose a longer length or text.")
}

/// `have` tokens the model reads (the start token where the tokenizer has
/// one, then the text's), fewer than the `asked` length.
pub fn text_too_short(have: usize, start_token: bool, asked: usize) -> String {
    let text = have - start_token as usize;
    let with = if start_token {
        format!(" ({have} with the start token)")
    } else {
        String::new()
    };
    format!("your text has {text} tokens{with}, fewer than the {asked} asked for: the views use all of them")
}

/// Before a problem with the desktop app's own state file (`app::saved`).
pub const STATE_FILE: &str = "the saved view";
/// Before why the desktop app's state could not be written.
pub const STATE_NOT_SAVED: &str = "the view was not saved";

pub fn error(message: &str) -> String {
    format!("Error: {message}")
}

pub const HALVE_LENGTH: &str = "Halve";
pub const DOUBLE_LENGTH: &str = "Double";
pub const HALVE_HELP: &str = "Halve the length (or the left arrow key)";
pub const DOUBLE_HELP: &str = "Double the length (or the right arrow key)";
pub const PLAY_LENGTHS: &str = "Play";
pub const PAUSE_LENGTHS: &str = "Pause";
pub const PLAY_HELP: &str = "Double the length again and again up to 16L (starting from L/2 when it is already there), each time a moment after every view has been computed: watch the attention spread as the input grows past L (the layer × head map turns to the same colours at every length, so it brightens as it grows). Pause stops; any length button takes over. The space bar plays and pauses too.";

pub fn at_training_length(l: usize) -> String {
    format!("L = {l}")
}

pub fn length_vs_training(length: usize, training: usize, ratio: f64) -> String {
    format!("{length} tokens = {ratio:.2} × L (the training length, {training})")
}
pub const NO_SCALES_SOURCE: &str = if cfg!(target_arch = "wasm32") {
    "paste the JSON of a head-scales file (Save the scales writes one)"
} else {
    "type the path of a head-scales file, or paste its JSON"
};

pub fn scales_shape(layers: usize, heads: usize, model_layers: usize, model_heads: usize) -> String {
    format!("the file has {layers} layers × {heads} heads of scales; the model has {model_layers} × {model_heads}")
}

/// Under a scales file searched on another model than the one in view.
pub fn scales_searched_on(model: &str) -> String {
    format!("These scales were searched on {model}, not on the model in view: they fit its shape, but each head's scale was tuned for the heads of {model}.")
}
/// Under scales searched on other weights than the model in view's
/// (`model`: the model their file names, if any).
pub fn scales_other_weights(model: Option<&str>) -> String {
    let named = model.map_or_else(String::new, |m| format!(" (the file says they were searched on {m})"));
    format!("These scales were searched on other weights than the model in view's{named}: they fit its shape, but each head's scale was tuned for the heads of those weights.")
}
/// Under a scales file whose search was stopped before its end.
pub fn scales_stopped(done: u64, uniform: bool) -> String {
    let unit = crate::model::head_scales::search_unit(uniform, done);
    format!("Its search was stopped after {done} {unit}: these are the scales it had then, not the search's result.")
}

/// The model a search's file names when it ran on a model opened in the
/// app (whose folder the app does not know).
pub const OPENED_MODEL: &str = "a model opened in the app";
pub fn loaded_from(name: &str) -> String {
    format!("loaded from {name}")
}

pub fn head_column(head: usize) -> String {
    format!("h{head}")
}

pub fn layer_row(layer: usize) -> String {
    format!("layer {layer}")
}

pub fn map_unit(rise: bool) -> &'static str {
    if rise {
        "bits of rise from L"
    } else {
        "bits"
    }
}

/// The top of the entropy map's colour bar: the ceiling at this length.
pub fn map_ceiling(top: f32) -> String {
    format!("{top:.2} bits = log2 T")
}

/// The top of the entropy map's colour bar on one scale for all lengths:
/// the ceiling at the longest.
pub fn map_shared_ceiling(top: f32, longest: usize) -> String {
    format!("{top:.2} bits = log2 {longest}, at every length")
}

/// The heading over the input's text (`views::document`).
pub fn show_document(tokens: usize, stretches: usize) -> String {
    if stretches > 1 {
        format!("The text the model reads ({tokens} tokens, the first of {stretches} stretches)")
    } else {
        format!("The text the model reads ({tokens} tokens)")
    }
}

/// `show_document` over a pass-key document of `length` tokens, whose
/// last ones are the key's digits that the model is to write.
pub fn show_passkey_document(tokens: usize, length: usize) -> String {
    if length > tokens {
        format!(
            "The text the model reads ({tokens} tokens; with the key's {} tokens it is to write, {length} in all)",
            length - tokens
        )
    } else {
        format!("The text the model reads ({tokens} tokens)")
    }
}

/// Where the training length falls in the text.
pub fn document_l_mark(training_length: usize) -> String {
    format!("[L = {training_length}: past here the model never read]")
}

/// Under the map's colour bar: what a brighter cell means.
pub fn map_brighter(rise: bool) -> &'static str {
    if rise {
        "Brighter: the head's entropy rose more from L, more distracted."
    } else {
        "Brighter: the head's attention is more spread out, more distracted."
    }
}

pub const MAP_CEILING_HOVER: &str = "The top of the colour bar is log2 T bits, the ceiling at the last of the T positions (attention spread evenly over all T tokens). A cell is a head's mean over every position, where the ceiling is lower, so even a head that spreads evenly stays under the top.";

pub fn cell_hover(name: &str, value: f32, rise: bool) -> String {
    if rise {
        format!("{name}: {value:.3} {}", map_unit(rise))
    } else {
        format!("{name}: {value:.3} bits, its mean entropy over every position")
    }
}

pub const POSITION_AXIS: &str = "query position i";
pub const BITS_AXIS: &str = "entropy (bits)";
pub const KEY_POSITION: &str = "pass key";
pub const LOG_WEIGHTS: &str = "Log scale";
pub const LOG_WEIGHTS_HOVER: &str = "Attention weights on a log axis, from one in a million to 1: small weights, and how evenly they spread, show beside a spike.";

/// A weight axis' label at 10^k: 1, 0.1, 0.01, then 1e-3 and smaller.
pub fn decade(k: i32) -> String {
    match k {
        0 => "1".into(),
        -1 => "0.1".into(),
        -2 => "0.01".into(),
        k => format!("1e{k}"),
    }
}

/// Lengths this model's L puts past the app's longest, left out of a sweep.
pub fn lengths_left_out(max: usize) -> String {
    format!("Lengths past {max} tokens, the longest this app computes, are left out for this model.")
}

/// The mark for the training length on a length axis, labelled in place.
pub fn training_mark(l: usize) -> String {
    format!("L = {l}")
}

/// A mark's label at the right end of an axis it lies past.
pub fn past_axis(label: &str) -> String {
    format!("{label} is past the axis \u{bb}")
}

/// The entropy plot's line of a setting's mean over heads.
pub fn mean_line(setting: &str) -> String {
    format!("{setting}: {MEAN_OVER_HEADS}")
}

/// The entropy legend table's column of the selected head.
pub fn selected_column(head_name: &str) -> String {
    format!("{head_name} (selected)")
}

/// The entropy legend table's column of a pinned head (its own name is
/// the map cell's).
pub fn pinned_column(head_name: &str) -> String {
    format!("{head_name} (pinned)")
}

/// The entropy plot's line of one head under a setting.
pub fn head_line(setting: &str, head_name: &str) -> String {
    format!("{setting}: {head_name}")
}

/// Over a view's last plot or map (`what`: `MEANWHILE_PLOT`, ...), drawn
/// on while the next length's computes.
pub fn shown_meanwhile(what: &str, length: usize) -> String {
    format!("Meanwhile, {what} of the last input computed ({length} tokens):")
}
pub const MEANWHILE_PLOT: &str = "the plot";
pub const MEANWHILE_MAP: &str = "the map";
pub const MEANWHILE_ROW: &str = "the row";
pub const MEANWHILE_POOLED: &str = "the maps";

/// Over the entropy plot: the stretches read and each setting's loss
/// (`losses`: the setting's name and its loss in nats; `named` where the
/// view has several settings, as its curves are).
pub fn entropy_summary(length: usize, windows: usize, losses: &[(&str, f64)], named: bool) -> String {
    let stretches = if windows == 1 {
        "one stretch".to_string()
    } else {
        format!("{windows} stretches")
    };
    let loss = |l: f64| format!("loss {l:.3} nats, perplexity {:.1}", l.exp());
    let losses = match losses {
        [(_, l)] if !named => loss(*l),
        _ => losses
            .iter()
            .map(|(name, l)| format!("{name}: {}", loss(*l)))
            .collect::<Vec<_>>()
            .join("; "),
    };
    format!(
        "{length} tokens; the curves are the mean over {stretches} of the text, each {length} tokens long; {losses}"
    )
}

/// One setting's curves, as the entropy plot's hover reads them.
pub struct Readout<'a> {
    pub setting: &'a str,
    /// The mean over heads, unless its line is hidden.
    pub mean: Option<&'a [f32]>,
    /// The selected head's, when the model has it (and it is shown).
    pub head: Option<&'a [f32]>,
    /// The pinned heads', named.
    pub pinned: Vec<(String, &'a [f32])>,
}

/// The entropy plot's hover at position `i`: its token and every curve's
/// value there (the mean over heads, the selected head `head_name` and the
/// pinned heads).
pub fn position_hover(i: usize, token: &str, readout: &[Readout], head_name: &str, ceiling: bool) -> String {
    let mut s = format!("position {i}, token {}", quoted(token));
    for r in readout {
        let mut parts = Vec::new();
        if let Some(mean) = r.mean.and_then(|m| m.get(i)) {
            parts.push(format!("mean {mean:.2} bits"));
        }
        if let Some(h) = r.head.and_then(|h| h.get(i)) {
            parts.push(format!("{head_name}: {h:.2}"));
        }
        for (name, h) in &r.pinned {
            if let Some(h) = h.get(i) {
                parts.push(format!("{name}: {h:.2}"));
            }
        }
        if !parts.is_empty() {
            s.push_str(&format!("\n{}: {}", r.setting, parts.join(", ")));
        }
    }
    if ceiling {
        s.push_str(&format!(
            "\nuniform over {} tokens: {:.2}",
            i + 1,
            ((i + 1) as f64).log2()
        ));
    }
    s
}

pub const KEY_AXIS: &str = "key position j";
pub const WEIGHT_AXIS: &str = "attention weight";
pub const RETRIEVING_QUERY: &str = "The answering query";
pub const LAST_QUERY: &str = "Last token as query";

/// An attention row's hover at key `j`: its token (where the view has
/// them) and each setting's weight there (rows end at their query).
pub fn key_hover(j: usize, token: Option<&str>, rows: &[(&str, &[f32])]) -> String {
    let mut s = format!("key {j}");
    if let Some(t) = token {
        s.push_str(&format!(", token {}", quoted(t)));
    }
    for (setting, row) in rows {
        if let Some(w) = row.get(j) {
            s.push_str(&format!("\n{setting}: {w:.4} ({:.1}%)", 100.0 * w));
        }
    }
    s
}

/// A token as the views name it: in quotes, with a token of white space
/// alone said in words (a quoted space, " ", reads as nothing).
pub fn quoted(token: &str) -> String {
    match token {
        " " => "\" \" (a space)".into(),
        "\n" => "\"\\n\" (a line break)".into(),
        t if !t.is_empty() && t.trim().is_empty() => format!("{t:?} (white space)"),
        t => format!("{t:?}"),
    }
}

pub const ON_TEXT_HEADING: &str = "Where this query looks, in the text";
pub const ON_TEXT_HELP: &str = "Each token is shaded as strongly as the query attends to it (the most attended token fully); the query underlined. A long document shows the stretches around its most attended tokens and before the query.";
pub const ON_TEXT_SHADED_BY: &str = "Shaded by";
pub const ON_TEXT_GAP: &str = " [...] ";
/// The query's most attended tokens: (token, position, share of its attention).
pub fn most_attended(top: &[(&str, usize, f32)]) -> String {
    let items: Vec<String> = top
        .iter()
        .map(|(t, j, w)| {
            // Spread attention gives each token a few hundredths of a percent.
            let pct = 100.0 * w;
            let decimals = if pct < 1.0 { 2 } else { 1 };
            format!("{pct:.decimals$}% on {} ({j})", quoted(t))
        })
        .collect();
    format!("Most attended: {}", items.join(", "))
}

pub fn row_caption(query: usize, token: Option<&str>) -> String {
    format!(
        "Attention of query {query} (token {}) over every earlier token",
        quoted(token.unwrap_or(""))
    )
}

/// Under the attention row when a setting's query puts most of its
/// attention on the first token; `rope`: the model has position encoding.
pub fn sink_note(setting: &str, share: f32, rope: bool) -> String {
    let found = if rope {
        ""
    } else {
        " Without position encoding the model still finds the first token: it is the only one that sees nothing but itself."
    };
    format!(
        "{setting}: {:.0}% of this query's attention is on the first token, whatever it says: an attention sink. \
         Attention must add up to 1, and trained heads park what they do not need on a token every query can see.{found} \
         A head holding its sink keeps a low entropy.",
        100.0 * share
    )
}

pub const MAP_ROWS: &str = "layer";
pub const MAP_COLS: &str = "head";

pub fn map_title(mode: crate::app::state::MapMode, length: usize) -> String {
    use crate::app::state::{MapMode, MAX_LENGTH};
    match mode {
        MapMode::Rise => format!("Rise of each head's mean attention entropy from L to {length} tokens"),
        MapMode::Entropy => format!("Each head's mean attention entropy at {length} tokens"),
        MapMode::Shared => format!(
            "Each head's mean attention entropy at {length} tokens, coloured as at every length (0 to log2 {MAX_LENGTH} bits)"
        ),
    }
}

pub const POOLED_ROWS: &str = "query bin (first token)";
/// The pooled map's colour bar ends (`views::attention::pooled_image`).
pub const POOLED_SCALE_LOW: &str = "0.0001 or less";
pub const POOLED_SCALE_HIGH: &str = "1 (attention, log scale; upper right: keys after the query, which it cannot see)";
/// Under a pooled map: its axes.
pub fn pooled_axes(length: usize) -> String {
    let last = length.saturating_sub(1);
    format!("Rows: query position i, 0 (top) to {last}; columns: key position j, 0 (left) to {last}.")
}
pub const POOLED_COLS: &str = "key bin (first token)";
pub const POOLED_VALUE: &str = "mean attention";

/// Hover on a pooled map's cell: positions `queries` and `keys`
/// (inclusive), with their tokens when a cell is one position each.
pub fn pooled_hover(queries: (usize, usize), keys: (usize, usize), share: f32, tokens: Option<(&str, &str)>) -> String {
    let span = |name: &str, (a, b): (usize, usize)| {
        if a == b {
            format!("{name} {a}")
        } else {
            format!("{name}s {a} to {b}")
        }
    };
    if keys.0 > queries.1 {
        return format!("{}: after the query, masked", span("key", keys));
    }
    let whose = if queries.0 == queries.1 { "its" } else { "their" };
    let mut s = format!(
        "{}, {}: {:.2}% of {whose} attention",
        span("query", queries),
        span("key", keys),
        100.0 * share
    );
    if let Some((q, k)) = tokens {
        s.push_str(&format!("\ntokens {} -> {}", quoted(q), quoted(k)));
    }
    s
}

pub fn pooled_alt(name: &str, n: usize, length: usize) -> String {
    format!("{name}: attention of {length} queries over {length} keys, pooled to {n} × {n}")
}

pub const LENGTH_AXIS: &str = "length (tokens, log scale)";
pub const PERPLEXITY_AXIS: &str = "perplexity";
pub const PASSKEY_AXIS: &str = "pass-key accuracy";

pub const BACKEND_AUTO: &str = "auto";
pub const BACKEND_CPU: &str = "CPU";
pub const BACKEND_GPU: &str = "GPU";
pub const ENGINE_NOT_STARTED: &str = "(starts with the first computation)";
pub const IDLE: &str = "idle";
/// The web page, once its loader has kept every file it started with.
pub const OFFLINE_READY: &str = "works offline";
pub const OFFLINE_READY_HOVER: &str = "This browser keeps a copy of the page: at this address it opens and computes without a network (the models and the text are inside it). With a network, each visit checks for a newer version.";

pub fn jobs_running(n: usize, message: &str) -> String {
    format!("{n} running: {message}")
}

/// The mean frame time while the app computed: now, or (`busy` false)
/// during the last computation.
pub fn frame_time(ms: f32, busy: bool) -> String {
    if busy {
        format!("frame {ms:.1} ms while computing")
    } else {
        format!("frames {ms:.1} ms during the last computation")
    }
}
pub const FRAME_TIME_HOVER: &str = "How long the app took to draw one frame while it computed: under about 50 ms it feels smooth; more, and it stutters while the model runs.";

/// `frame_time` where the status bar is narrow (a phone, a tablet in
/// portrait): the whole sentence is its hover.
pub fn frame_time_short(ms: f32) -> String {
    format!("{ms:.0} ms a frame")
}
pub const CANCELLED: &str = "stopped; change a setting (or Resume, where offered) to compute again";
/// A sweep stopped part way, beside what it had finished.
pub const STOPPED_PART_WAY: &str = "stopped part way: what was done is shown";

pub fn gpu_on_cpu_adapter(adapter: &str) -> String {
    format!(
        "the GPU engine on {adapter}, as asked: a CPU adapter that also draws this window, so frames stall while it computes; the CPU engine is faster here"
    )
}
pub const UNNAMED_ADAPTER: &str = "the browser's adapter";
/// Why the CPU engine in a web page runs on the threads it does.
pub fn web_threads(threads: usize) -> String {
    format!(
        "{threads} threads: the page's and {} Web Worker(s) on shared memory",
        threads - 1
    )
}
pub const WEB_ONE_THREAD_ASKED: &str = "one thread, as the page's address asks (threads=1 or simd=plain)";
pub const WEB_ONE_THREAD_NOT_STARTED: &str =
    "one thread: the build with threads did not start (the browser's console says why)";
pub const WEB_ONE_THREAD_NOT_ISOLATED: &str = "one thread: this page is not cross-origin isolated (its server sends no Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp, or another site embeds it), so the CPU engine cannot share memory with Web Workers";
pub const WEB_ONE_THREAD_NO_RELAXED: &str =
    "one thread: the build with threads also needs relaxed SIMD, which this browser lacks";
pub const WEB_ONE_THREAD_NO_WORKERS: &str = "one thread: no Web Worker joined (the browser's console says why)";
pub const WEB_ONE_PROCESSOR: &str = "one thread: the browser reports one processor";

// The classroom walkthrough (app::tour): two to four plain sentences a step.
pub const TOUR_BACK: &str = "Back";
pub const TOUR_NEXT: &str = "Next";
/// On hover over Back and Next: a presentation clicker works them.
pub const TOUR_BACK_HELP: &str = "The previous step (or Page Up, as a presentation clicker sends it)";
pub const TOUR_NEXT_HELP: &str = "The next step (or Page Down, as a presentation clicker sends it)";
pub const TOUR_CLOSE: &str = "Close the walkthrough";
pub const TOUR_FINISH: &str = "Finish";
pub const TOUR_FINISH_HELP: &str =
    "Close the walkthrough and explore on your own; Walkthrough in the page bar opens it again.";
pub const TOUR_PENDING: &str = "Computing what this step shows...";

pub fn tour_step(step: usize, steps: usize) -> String {
    format!("Step {} of {steps}", step + 1)
}
pub fn tour_met(what: &str) -> String {
    format!("Measured just now: {what}.")
}
pub fn tour_broken(what: &str) -> String {
    format!("This step's claim does not hold on these results: {what}.")
}

pub const TOUR_1_TITLE: &str = "What attention is, and its entropy";
pub const TOUR_1_BODY: &str = "At every position the model looks back at the tokens before it and shares out one unit of attention among them. The entropy of that share, in bits, says how spread out it is: 0 bits means one token gets everything, log2(n) bits means all n tokens get the same. The model here reads 256 tokens of its validation text, speeches it never saw in training.";
pub const TOUR_1_LOOK: &str = "Look at the thick curve, the mean over heads: it stays below the grey ceiling, the entropy of attention spread evenly. The thin curve is one head, the selected one.";
/// Step 1's measurement: the mean curve's gap under the ceiling, on
/// average over positions, and the most it rises above it (`worst`).
pub fn tour_1_measured(tokens: usize, below: f32, worst: f32) -> String {
    if worst <= 1e-3 {
        format!("{tokens} tokens; the mean curve is {below:.2} bits under the ceiling on average, and nowhere above it")
    } else {
        format!("{tokens} tokens; the mean curve rises {worst:.3} bits above the ceiling somewhere")
    }
}

/// Steps 3 and 8's measurement: the mean curve's gap under the ceiling
/// over positions L/2..L and over the last L/2 (from `end`).
pub fn tour_gap_measured(l: usize, before: f32, end: usize, length: usize, after: f32) -> String {
    if length <= l {
        return format!("{length} tokens, not past L = {l}: set a longer length to see the gap narrow");
    }
    format!(
        "the mean curve is {before:.2} bits under the ceiling over positions {}-{} and {after:.2} bits under it over {end}-{}",
        l / 2,
        l.saturating_sub(1),
        length - 1
    )
}

pub const TOUR_2_TITLE: &str = "Trained on L = 256 tokens, it finds a hidden key";
pub const TOUR_2_BODY: &str = "This model has no position encoding (NoPE) and never saw a document longer than L = 256 tokens; past it, every length axis marks L with a dashed line. Here a five-digit pass key is hidden in 256 tokens of filler, and the model is asked to repeat it. At this length it answers with the key: some heads look straight at it.";
pub const TOUR_2_LOOK: &str = "Look at the answer beside the key, and at the attention row of the head that retrieves best: most of it rests on the key's digits.";

pub const TOUR_3_TITLE: &str = "Longer inputs: attention spreads out";
pub const TOUR_3_BODY: &str = "Now the same model reads 1024 tokens, four times what it was trained on. Past the dashed line at L the entropy closes in on the ceiling: the heads share their attention among more and more tokens instead of picking the few that matter. The paper calls this distraction.";
pub const TOUR_3_LOOK: &str = "Look at the gap between the thick mean curve and the grey ceiling, left and right of the dashed line at L: past L it narrows. The thin curve is now the head whose gap to the ceiling shrinks most past L: not the flattest head, the one that flattens fastest.";

pub const TOUR_4_TITLE: &str = "Past L, retrieval fails";
pub const TOUR_4_BODY: &str = "The same key hidden in 1024 tokens. Nothing about the task changed except the length, yet the model that found the key at 256 tokens now answers wrongly: the answering query's attention is smeared over the filler instead of resting on the key.";
pub const TOUR_4_LOOK: &str = "Look at the answer, and at the attention row of the head that now retrieves best: compare its share on the key's tokens (given under the row) with step 2's.";

pub const TOUR_5_TITLE: &str = "The distracted heads";
pub const TOUR_5_BODY: &str = "Every head's entropy rises past L, but not alike. The map now shows how much each head's entropy rises from L to 1024 tokens; the brightest heads rise most, the most distracted, and the walkthrough selects the one that rises most.";
pub const TOUR_5_LOOK: &str = "Look at the layer × head map, then at the selected head's curve and attention pattern.";

// Steps 6 to 8 quote docs/RESULTS.md (`nopescope reproduce`), in words a
// web page's reader can follow without opening it.
pub const TOUR_6_TITLE: &str = "A temperature brings attention back";
pub const TOUR_6_BODY: &str = "Multiplying the attention scores by a scale s above 1 (a lower temperature) sharpens every head again. With one uniform scale, s = 1.2, the model finds this key in 2L = 512 tokens, where plain NoPE does not: over 50 documents it finds 80% of the keys, against NoPE's 2%. The Pass-key lab's accuracy map measures the same on this device.";
pub const TOUR_6_LOOK: &str = "Compare the two answers and attention rows (NoPE, and with the scale); the Explore page shows the entropy falling.";

pub const TOUR_7_TITLE: &str = "One scale per head, searched";
pub const TOUR_7_BODY: &str = "Better still: keep the model frozen and learn one scale per head, so that each head is sharpened only as much as it needs. These scales were searched at 4L and ship with the model; at 2L they took back 88 of the 98 points of pass-key accuracy that NoPE loses (50 documents).";
pub const TOUR_7_LOOK: &str = "Compare the two answers; the next step searches scales like these on this device.";

pub const TOUR_8_TITLE: &str = "Tune the scales yourself";
pub const TOUR_8_BODY: &str = "Step 7's scales came from a search like this one, which runs here, on this device. The model stays frozen; only its 16 scales, one per head, are learned. Each round of the search hides keys in a few documents of 2L = 512 tokens and moves every scale a little, so that the model finds the keys' digits more surely. The objective measures how unsure the model is of those digits (its loss): lower is better.";
pub const TOUR_8_LOOK: &str = "Press Start search, then watch the objective fall and the map of scales change: the heads that need sharpening move up from 1. When it finishes, \"Apply the result\" uses these scales on every page (until another step sets its own).";
/// The search step before its search has started.
pub const TOUR_SEARCH_PENDING: &str = "Not measured yet: press Start search (the panel says how long it takes here).";
pub const TOUR_SEARCH_OTHER: &str =
    "Not measured yet: a search of other settings is running; cancel it, then press Start search.";
pub const TOUR_SEARCH_PAUSED: &str = "Not measured yet: the search is paused; press Resume to finish it.";
pub const TOUR_SEARCH_FAILED: &str = "Not measured: the search failed (the panel says why).";
pub const TOUR_SEARCH_PER_HEAD: &str = "This step measures a search per head: choose \"Per head\".";
pub const TOUR_SEARCH_TWO_STEPS: &str = "This step needs a search of at least 2 search steps: set Steps to 2 or more.";
pub fn tour_search_running(done: usize, steps: usize) -> String {
    format!("Searching: {done} of {steps} search steps done; measured when it finishes.")
}
/// The search step's measurement: the objective's mean over the first and
/// last `k` of `steps` steps, and the largest scale.
pub fn tour_search_measured(
    steps: usize,
    k: usize,
    first: f64,
    last: f64,
    top: f32,
    layer: usize,
    head: usize,
) -> String {
    let (a, b) = if k == 1 {
        ("step 1".to_string(), format!("step {steps}"))
    } else {
        (
            format!("mean of steps 1-{k}"),
            format!("mean of steps {}-{steps}", steps - k + 1),
        )
    };
    format!(
        "over {steps} steps the objective went from {first:.3} ({a}) to {last:.3} ({b}); the largest scale, s = {top:.2}, went to layer {layer}, head {head}"
    )
}

pub const TOUR_9_TITLE: &str = "For comparison: RoPE";
pub const TOUR_9_BODY: &str = "This twin was trained the same way but with rotary position encoding (RoPE). Past L its attention comes only a little nearer the ceiling, where NoPE's gap more than halved (step 3), yet it fails too, for another reason: it meets positions it never saw in training. Over 50 documents it finds the pass key in 100% of them at L and in 2% at 2L.";
pub const TOUR_9_LOOK: &str = "Look at the gap between the mean curve and the grey ceiling past the dashed line, compare it with step 3, and switch the model back to NoPE.";

// Export (app::export).
pub const EXPORT: &str = "Export";
pub const EXPORT_CSV_HELP: &str = "The plotted data as CSV: one row per point (series, x, y); marks such as L first.";
/// `EXPORT_CSV_HELP` under a map.
pub const EXPORT_GRID_CSV_HELP: &str = "The map as CSV: one row per cell (row, column, value).";
pub const EXPORT_SVG_HELP: &str = "The figure as SVG, drawn from the same data (for slides and papers).";
pub const EXPORT_PNG_HELP: &str = "The plot as it looks on screen, as PNG.";
pub const EXPORT_EMPTY: &str = "the plot is not on screen: scroll it into view and export again";
pub const SAVE_PATH: &str = "Save to";
pub const SAVE: &str = "Save";
pub const REPLACE_FILE: &str = "A file of that name exists: replace it";
pub fn save_title(name: &str) -> String {
    format!("Save {name}")
}
pub fn saved_to(path: &str) -> String {
    format!("Saved {path}")
}
pub fn downloaded(name: &str) -> String {
    format!("Downloaded {name}")
}

// Your own model (a Hugging Face folder).
pub const NO_MODEL_OPENED: &str = "no model of your own is open: open a Hugging Face folder first";
pub const MODEL_CUSTOM: &str = "Your model";
pub const OPEN_MODEL: &str = "Open a model";
pub const MODEL_FOLDER: &str = "Hugging Face folder (config.json, model.safetensors or shards, tokenizer.json)";
pub const OPEN_FOLDER: &str = "Open folder";
pub const OPENING_MODEL: &str = "Opening the model...";
pub const DROPPED_FILES: &str = "the dropped files";
pub const PICKED_FILES: &str = "the picked files";
pub const PICK_FILES: &str = "Pick the model's files";
pub const DROP_HINT: &str = "Or drop the folder's files on this window.";
pub const BROWSE: &str = "Browse...";
pub const CHOOSE_FOLDER: &str = "Choose a model folder";
pub const FOLDER_UP: &str = "Up one folder";
pub const FOLDER_HOME: &str = "Home folder";
pub const NO_SUBFOLDERS: &str = "(no folders inside)";
pub const HAS: &str = "has";
pub const LACKS: &str = "no";
pub const OPEN_THIS_FOLDER: &str = "Open this folder";
pub const CHOOSE_SAVE_FOLDER: &str = "Choose where to save";
pub const SAVE_IN_THIS_FOLDER: &str = "Save in this folder";
pub const CANNOT_SAVE_HERE: &str = "This folder cannot be read (see above).";
pub const NOT_A_MODEL_FOLDER: &str = "A model folder has a config.json (and its weights and tokenizer.json).";
pub fn cannot_list_folder(dir: &str, why: &str) -> String {
    format!("cannot list {dir}: {why}")
}
pub fn model_opened(name: &str, layers: usize, heads: usize, training: usize) -> String {
    format!("Opened {name}: {layers} layers × {heads} heads, training length {training}")
}

// Pass-key lab
pub const PASSKEY_HEADING: &str = "Pass-key lab";
pub const PASSKEY_HELP: &str = "A 5-digit key hidden at some depth in filler text, asked for at the end. The model writes its answer by always taking its most likely next token; past the training length L plain NoPE's attention spreads out and the key is lost, and the head scales bring it back.";
pub const PASSKEY_DOC_HEADING: &str = "One document";
pub const PASSKEY_LENGTH: &str = "Document length (tokens)";
pub const PASSKEY_RANDOM_KEY: &str = "Random key";
pub const FILLER: &str = "Filler";
pub const FILLER_REPEATED: &str = "The paper's repeated sentences";
pub const FILLER_VALIDATION: &str = "Validation text";
pub const FILLER_PASTED: &str = "Your text";
pub const FILLER_PASTED_NONE: &str = "Type or paste text under \"Your text\" on the Explore page first.";
pub const PASSKEY_NO_TEXT: &str = "there is no text of yours to use as filler: type or paste some on the Explore page";
pub const PASSKEY_DECODING: &str = "decoding the answer";
pub const LAYER: &str = "Layer";
pub const HEAD: &str = "Head";
pub const SHOW_BEST_HEAD: &str = "Show this head";
pub const PASSKEY_ROW_HELP: &str = "Attention of the answering query (the one that predicts the key's first digit), for the chosen layer and head. The shaded band is the key sentence, which names the key twice. The axis runs to 1, all of the query's attention, so rows at two lengths compare at a glance; Log scale shows the small weights.";
pub const KEY_SENTENCE: &str = "key sentence";
/// An exported mark at the key sentence's first key, or one past its last.
pub fn key_sentence_end(start: bool) -> String {
    format!("{KEY_SENTENCE} {}", if start { "starts" } else { "ends" })
}
pub fn passkey_row_title(head: &str, length: usize) -> String {
    format!("{head}: the answering query's attention in a pass-key document of {length} tokens")
}
pub const GRID_HEADING: &str = "Accuracy over length and depth";
pub const GRID_HELP: &str = "Each cell: the documents of that length, with the key at that depth, whose key the model decodes exactly (a count when there are fewer than 10 trials, else a percentage). The same keys and depths at every length; the underlined column is the training length L. Hover a cell for its counts, or Tab to the map and move over it with the arrow keys.";
pub const GRID_START: &str = "Compute the accuracy map";
pub const GRID_STOP: &str = "Stop the accuracy map";
pub const GRID_STOP_HELP: &str =
    "Stops computing: the cells done so far stay, and \"Resume the accuracy map\" computes the rest.";
pub const GRID_GO_ON: &str = "Resume the accuracy map";
pub const GRID_GO_ON_HELP: &str = "Computes the cells left, going on from those done.";
pub const GRID_CLEAR: &str = "Clear the accuracy map";
pub const GRID_CLEAR_HELP: &str = "Clears the maps (export them first to keep them).";
pub const GRID_TRIALS: &str = "Trials per cell";
pub const GRID_DEPTHS: &str = "Depths";
pub const GRID_LONGEST: &str = "Longest length";
pub const GRID_SERIES: &str = "Compute for";
pub const GRID_DEPTH_AXIS: &str = "depth";
pub const GRID_LENGTH_AXIS: &str = "Across: the document's length in tokens, with its multiple of the training length L (the L column underlined). Down: the key's depth (0 = at the start, 1 = at the end).";

/// A length as a multiple of the training length `l`: "L", "2L", "L/2",
/// or "1.50L" where it is neither.
pub fn times_l(length: usize, l: usize) -> String {
    if l == 0 {
        return String::new();
    }
    if length == l {
        "L".into()
    } else if length > l && length.is_multiple_of(l) {
        format!("{}L", length / l)
    } else if length < l && l.is_multiple_of(length) {
        format!("L/{}", l / length)
    } else {
        format!("{:.2}L", length as f64 / l as f64)
    }
}
pub const GRID_PENDING: &str = "not yet run";
pub const GRID_TOO_SHORT: &str = "too short to hold the question";
pub const GRID_NO_SERIES: &str = "Tick at least one model to compute.";
pub const EXPORT_CSV: &str = "Export all maps as one CSV";
/// An accuracy map's title in its exported figure.
pub fn grid_title(series: &str) -> String {
    format!("Pass-key accuracy, {series}")
}
/// An exported accuracy map's columns.
pub fn grid_length_column(training_length: usize) -> String {
    format!("length in tokens (L = {training_length})")
}
pub const EXPORT_GRID_HELP: &str =
    "The accuracy maps shown, as CSV (one row per map, length and depth): natively through the save dialog, on the web as a download. Each map also exports on its own, as CSV, SVG or PNG, under it.";

pub fn passkey_too_short(length: usize, shortest: usize) -> String {
    format!(
        "a pass-key document of {length} tokens is too short: the instruction, key sentence and question alone take {}; choose {shortest} tokens or more",
        shortest - 1
    )
}

pub const PASSKEY_RANKING: &str = "attention on the key, every head";

pub fn grid_progress(length: usize, depth: f64, trial: usize, trials: usize) -> String {
    format!("length {length}, depth {depth:.2}, trial {trial}/{trials}")
}

pub fn passkey_key_line(key: u32, length: usize, training: usize) -> String {
    format!(
        "Key {key} in {length} tokens ({:.2} × L, L = {training})",
        length as f64 / training as f64
    )
}

/// The answer beside the key; the verdict in words, not colour alone.
pub fn passkey_answer(setting: &str, answer: &str, key: u32, correct: bool) -> String {
    let answer = answer.trim();
    let verdict = if correct { CORRECT } else { WRONG };
    format!("{setting}: answers {answer:?}: {verdict}, the key is {key}")
}

pub const CORRECT: &str = "correct";
pub const WRONG: &str = "wrong";

pub fn best_head(setting: &str, layer: usize, head: usize, mass: f32) -> String {
    format!(
        "{setting}: the head that retrieves best is {} ({:.1}% of the answering query's attention on the key's tokens)",
        head_name(layer, head),
        100.0 * mass
    )
}

pub fn grid_cell(series: &str, length: usize, depth: f64, correct: usize, trials: usize) -> String {
    format!(
        "{series}, length {length}, depth {depth:.2}: {correct} of {trials} correct ({:.0}%)",
        100.0 * correct as f64 / trials.max(1) as f64
    )
}

pub fn grid_cell_other(series: &str, length: usize, depth: f64, what: &str) -> String {
    format!("{series}, length {length}, depth {depth:.2}: {what}")
}

pub fn grid_longest(factor: usize) -> String {
    if factor == 1 {
        "L".into()
    } else {
        format!("{factor}L")
    }
}

pub fn grid_cost(documents: usize, tokens: usize) -> String {
    format!("{documents} documents, {tokens} tokens per model")
}

pub const ACCURACY_LOW: &str = "0%";
pub const ACCURACY_HIGH: &str = "100% correct";

pub fn key_mass(setting: &str, head: &str, key: f32, sentence: f32) -> String {
    format!(
        "{setting}: {head} puts {:.1}% of its attention on the key's tokens, {:.1}% on the whole key sentence",
        100.0 * key,
        100.0 * sentence
    )
}

// Tuning panel
/// The page's heading is its tab's name, as on the other pages.
pub const TUNE_HEADING: &str = TAB_TUNE;
pub const TUNE_HELP: &str = "Search attention scales (s above 1 = a lower temperature) with every weight frozen: one per head (the paper's head-based scale) or one for all heads. Nothing changes in the other views until you apply a result.";
pub const IN_USE: &str = "Scales in use:";
pub const SEARCH_HEADING: &str = "Search";
pub const SEARCH_KIND: &str = "Search";
pub const KIND_HEADS: &str = "Per head";
pub const KIND_UNIFORM: &str = "Uniform";
pub const OBJECTIVE: &str = "Objective";
pub const OBJECTIVE_PASSKEY: &str = "Pass-key digits";
pub const OBJECTIVE_TEXT: &str = "Text";
pub const OBJECTIVE_PASTED: &str = "Your text";
pub const OBJECTIVE_PASTED_EMPTY: &str = "Your text is empty: type, paste or drop one on the Explore page (\"Your text\" under Input), or choose another objective.";
pub const SEARCH_RUNNING: &str = "A search is running: pause or cancel it first.";
pub const OBJECTIVE_PASTED_HINT: &str = "The next-token loss on your own text (typed, pasted or dropped on the Explore page), at the target length. Scales tuned on a text fit that text best: judge them on another.";
/// The objective "your text", when the text is too short for a window.
pub fn search_text_too_short(tokens: usize, length: usize) -> String {
    format!(
        "your text holds {tokens} tokens, too few for stretches of {length}: paste a longer text on the Explore page (Input: your text), or lower the target length"
    )
}
pub const TARGET_LENGTH: &str = "Target length";
pub const STEPS: &str = "Steps";
pub const BATCH: &str = "Documents per step";
pub const DOCUMENTS: &str = "Documents per point";
pub const LEARNING_RATE: &str = "Learning rate";
pub const INIT: &str = "Initial scale";
pub const RULE: &str = "Rule";
pub const RULE_CONSTANT: &str = "constant";
pub const RULE_LOG_N: &str = "log-n";
pub const RULE_FITTED: &str = "fitted s*(i)";
/// The folded search settings' header, with the values in use (learning
/// rate and initial scale of a per-head search).
pub fn more_settings(heads: Option<(f32, f32)>, rule: &str) -> String {
    match heads {
        Some((lr, init)) => format!("More settings: learning rate {lr}, initial scale {init:.2}, rule {rule}"),
        None => format!("More settings: rule {rule}"),
    }
}
// What each search setting means, on hover over its name (a student meets
// AdamW and learning rates here for the first time).
pub const SEARCH_KIND_HINT: &str = "Per head: one scale for each head, learned by gradient descent (AdamW) with every weight of the model frozen, the paper's head-based scale. Uniform: one scale for all heads, tried on a grid from 1 to 2.";
pub const OBJECTIVE_HINT: &str = "What the search makes smaller. Pass-key digits: the model's loss on the hidden key's digits, in pass-key documents of the target length. Text: its next-token loss on a text of that length, as in the paper (speeches kept apart for tuning, never the validation text). Your text: the same on the text you gave on the Explore page.";
pub const TARGET_LENGTH_HINT: &str = "The input length the scales are searched at; past L is where they are needed.";
pub const STEPS_HINT: &str = "How many gradient steps the per-head search takes.";
pub const BATCH_HINT: &str = "The documents each step averages over: more is steadier and slower.";
pub const DOCUMENTS_HINT: &str = "The documents each tried scale is measured on.";
pub const LEARNING_RATE_HINT: &str =
    "How far each step moves the scales. Too large and the objective jumps about; too small and it barely moves.";
pub const INIT_HINT: &str = "The scale every head starts from (1 is the model as trained; scales stay at 1 or above).";
pub const RULE_HINT: &str = "How a head's scale s grows with the query's position i. Constant: s at every position. log-n: s × max(1, ln(i + 1) / ln L). Fitted s*(i): s × max(1, 1 + a ln((i + 1) / L)).";
pub const START_SEARCH: &str = "Start search";
pub const START_SEARCH_HOVER: &str =
    "Search with these settings; the other views change only when you apply the result.";
/// `START_SEARCH_HOVER` beside a finished search's result.
pub const START_SEARCH_AGAIN_HOVER: &str =
    "Start a new search with these settings: its result replaces the one below (apply it, set it as B or save it first to keep it).";
pub const PAUSE: &str = "Pause";
pub const RESUME: &str = "Resume";
pub const STEP_SEARCH: &str = "Step";
pub const STEP_NEW_SEARCH_HOVER: &str =
    "Start a search with these settings and pause after its first step; Step again for each next one.";
pub const STEP_SEARCH_HOVER: &str =
    "Run one more step (one point of a uniform search) and pause again, to watch the scales and the objective move.";
pub const CANCEL_SEARCH: &str = "Cancel search";
/// `length`: the default target length, `l`: the model's training length.
pub fn no_search_yet(length: usize, l: usize, steps: usize, batch: usize) -> String {
    format!(
        "No search yet. The defaults (per head, pass-key digits, {length} tokens = {}, {steps} steps of {batch} documents) suit a classroom.",
        times_l(length, l)
    )
}
pub const SCALE_MAP_HEADING: &str = "Scales now (layer × head)";
pub fn scale_map_title(length: usize, done: usize, uniform: bool) -> String {
    let after = if uniform {
        format!("{done} scales tried")
    } else {
        format!("after {done} steps")
    };
    format!("Head scales searched at {length} tokens, {after} (layer × head)")
}
pub const LOSS_HEADING: &str = "Objective (lower is better)";
pub const STEP_AXIS: &str = "step";
pub const OBJECTIVE_AXIS: &str = "objective (nats)";
pub const SCALE_AXIS: &str = "head scale s";
pub const RESULT: &str = "Result:";
pub const APPLY_RESULT: &str = "Apply the result";
pub const RESULT_OTHER_MODEL: &str = "This result was searched on another model (or one of another shape): switch back to that model to apply it or compare with it. Save keeps it for that model.";
pub const RESULT_AS_B: &str = "Set the result as B";
pub const SHOW_JSON: &str = "Show as JSON";
pub const COPY_JSON: &str = "Copy the JSON";
pub const SAVE_SCALES: &str = "Save the scales";
pub const SAVE_SCALES_HELP: &str =
    "A head-scales file (JSON, with how it was found): natively through the save dialog, on the web as a download. Load it again with \"Load and apply\".";
pub const LOAD_SOURCE: &str = SCALES_FILE;
pub const LOAD_AND_APPLY: &str = "Load and apply";
pub const PRESETS_HEADING: &str = "Presets";
pub const PRESETS_HELP: &str = "Use one in every view, or make it setting B to compare against.";
pub const USE_PRESET: &str = "Use";
pub const PRESET_AS_B: &str = "Set as B";
pub const PRESET_S: &str = "s =";
pub const PRESET_A: &str = "a =";
/// The unscaled setting's name on a model with (`rope`) or without rotary
/// position encoding, as the explorer names it.
pub fn unscaled(rope: bool) -> &'static str {
    if rope {
        BEFORE_ROPE
    } else {
        BEFORE
    }
}
pub const PRESET_LOG_N: &str = "log-n rule: s(i) = max(1, ln(i + 1) / ln L)";
pub const PRESET_SHIPPED: &str = "scales shipped with the model (searched at 4L)";
pub const PRESET_SHIPPED_8L: &str = "scales shipped with the model (searched at 8L)";
pub const CURRENT_SCALES: &str = "the current scales";
pub const SETTING_B: &str = "setting B";
pub const COMPARE_HEADING: &str = "Compare";
pub const COMPARE_HELP: &str =
    "The Explore page draws the current scales against setting B: the model at s = 1 unless you choose another.";
pub const SETTING_B_IS: &str = "Setting B:";
pub const CLEAR_B: &str = "Back to s = 1";
pub const COMPARE_PASSKEY: &str = "Compare pass-key accuracy";
pub const SETTING: &str = "setting";
pub const SCATTER_HEADING: &str = "Scale against entropy at L";
pub const SCATTER_HELP: &str =
    "Each head's scale against its unscaled (s = 1) attention entropy at the training length (validation text), on the model in view. Hover a point to name the head.";
pub const SCATTER_OF_SEARCH: &str = "Scales of the latest search";
pub const SCATTER_OF_CURRENT: &str = "Scales in use";
pub const ENTROPY_AT_L_AXIS: &str = "entropy at L (bits)";

pub fn rule_name(rule: &crate::model::head_scales::ScaleRule) -> String {
    use crate::model::head_scales::ScaleRule;
    match *rule {
        ScaleRule::Constant => "constant".into(),
        ScaleRule::LogN { .. } => "log-n: s × max(1, ln(i + 1) / ln L)".into(),
        ScaleRule::Fitted { a, .. } => format!("fitted: s × max(1, 1 + {a:.3} ln((i + 1) / L))"),
    }
}

pub fn rule_in_use(rule: &crate::model::head_scales::ScaleRule) -> String {
    format!("rule: {}", rule_name(rule))
}

/// The scales in use when they are one uniform scale (and its rule), on a
/// model with (`rope`) or without rotary position encoding.
pub fn uniform_in_use(s: f32, rule: &crate::model::head_scales::ScaleRule, rope: bool) -> String {
    if rule.is_constant() {
        if s == 1.0 {
            unscaled(rope).into()
        } else {
            format!("uniform s = {s:.3}")
        }
    } else {
        format!("s = {s:.3}, {}", rule_name(rule))
    }
}

/// The search's target length against L, with a word where it is not past
/// L (where plain NoPE already works: `TARGET_LENGTH_HINT` says why).
pub fn target_length_note(length: usize, training: usize) -> String {
    let ratio = format!("= {:.2} L", length as f64 / training.max(1) as f64);
    if length <= training {
        format!("{ratio}: not past L")
    } else {
        ratio
    }
}

pub fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{:.0} s", seconds.max(1.0))
    } else {
        format!("{:.1} min", seconds / 60.0)
    }
}

/// The search's expected time: natively on a 2-core CPU; in the web page
/// for its CPU engine on as many threads as it runs (`web_threads`).
pub fn expected_time(seconds: f64, web_threads: Option<usize>) -> String {
    match web_threads {
        None => format!(
            "Expected: about {} on a 2-core CPU with the CPU engine (more cores or a GPU: faster).",
            duration(seconds)
        ),
        Some(threads) => format!(
            "Expected: about {} on a 2-core laptop with this page's CPU engine on {} (a GPU: faster).",
            duration(seconds),
            if threads > 1 { "its Web Workers" } else { "one thread" }
        ),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn search_status(
    uniform: bool,
    done: usize,
    planned: usize,
    rate: Option<f64>,
    left: Option<f64>,
    paused: bool,
    finished: bool,
    loss: Option<f64>,
) -> String {
    let unit = if uniform { "point" } else { "step" };
    let mut s = format!("{unit} {done} of {planned}");
    if let Some(l) = loss {
        s.push_str(&format!(", objective {l:.3}"));
    }
    if finished {
        s.push_str(", finished");
    } else if paused {
        s.push_str(", paused");
    } else {
        if let Some(r) = rate {
            s.push_str(&format!(", {r:.2} {unit}s/s"));
        }
        if let Some(t) = left {
            s.push_str(&format!(", about {} left", duration(t)));
        }
    }
    s
}

pub fn search_step(step: usize, steps: usize, loss: f64) -> String {
    format!("search step {step}/{steps}, objective {loss:.3}")
}

pub fn search_point(done: usize, total: usize, s: f32, loss: f64) -> String {
    format!("uniform search {done}/{total}: s = {s:.2}, objective {loss:.3}")
}

pub fn search_starting(done: usize, planned: usize) -> String {
    if done == 0 {
        "search: starting".into()
    } else {
        format!("search: resuming after {done} of {planned}")
    }
}

pub fn search_result_name(uniform: bool, length: usize, done: usize) -> String {
    let unit = crate::model::head_scales::search_unit(uniform, done as u64);
    let kind = if uniform { "uniform" } else { "per-head" };
    format!("{kind} search at {length} tokens ({done} {unit})")
}

pub fn preset_uniform(s: f32) -> String {
    format!("uniform s = {s:.2}")
}

pub fn preset_fitted(a: f64) -> String {
    format!("fitted rule: s(i) = max(1, 1 + {a:.3} ln((i + 1) / L))")
}

pub fn scale_hover(name: &str, s: f32) -> String {
    format!(
        "{}\nClick to select this head: the Explore page and the Pass-key lab show it.",
        scale_cell(name, s)
    )
}

/// A cell of the map of scales, as the accessibility tree names it.
pub fn scale_cell(name: &str, s: f32) -> String {
    format!("{name}: s = {s:.3}")
}

/// The head selected (on any page) and its scale in the search's map.
pub fn selected_scale(name: &str, s: f32) -> String {
    format!("Selected: {name}, s = {s:.3}")
}

pub fn scale_legend(hi: f32) -> String {
    format!("{hi:.2} (head scale)")
}

pub fn scatter_hover(name: &str, s: f64, bits: f64) -> String {
    format!("{name}\ns = {s:.3}, entropy at L {bits:.2} bits")
}

/// The exported comparison's title.
pub fn compare_title(trials: usize) -> String {
    format!("Pass-key accuracy against length, {trials} documents per length")
}

pub fn compare_trials(trials: usize) -> String {
    format!("Pass-key accuracy, {trials} documents per length (the repeated filler, depths spread evenly):")
}

pub fn length_column(length: usize, times: usize) -> String {
    if times == 1 {
        format!("L = {length}")
    } else {
        format!("{times}L = {length}")
    }
}

pub fn percent(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

pub fn model_too_big(needed: &str, available: &str, tokens: usize) -> String {
    format!(
        "this model needs about {needed} of memory here (its weights twice, the app's copy and the engine's, and what \
         {tokens} tokens take) and this machine has {available} available; the model was not loaded"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_separated() {
        let t = super::thousands;
        assert_eq!(
            [t(0), t(999), t(1000), t(16384), t(1234567)],
            ["0", "999", "1,000", "16,384", "1,234,567"]
        );
    }

    #[test]
    fn the_hover_leaves_hidden_lines_out() {
        let (mean, head) = ([1.0f32, 2.0], [0.5f32, 1.5]);
        let hover = |mean: Option<&[f32]>, head: Option<&[f32]>, ceiling| {
            let r = super::Readout {
                setting: "NoPE",
                mean,
                head,
                pinned: Vec::new(),
            };
            super::position_hover(1, "a", &[r], "h", ceiling)
        };
        assert_eq!(
            hover(Some(&mean), Some(&head), true),
            "position 1, token \"a\"\nNoPE: mean 2.00 bits, h: 1.50\nuniform over 2 tokens: 1.00"
        );
        assert_eq!(
            hover(None, Some(&head), false),
            "position 1, token \"a\"\nNoPE: h: 1.50"
        );
        assert_eq!(hover(None, None, false), "position 1, token \"a\"");
    }

    #[test]
    fn white_space_tokens_are_said_in_words() {
        assert_eq!(super::quoted(" "), "\" \" (a space)");
        assert_eq!(super::quoted("\n"), "\"\\n\" (a line break)");
        assert_eq!(super::quoted("  "), "\"  \" (white space)");
        assert_eq!(super::quoted(" the"), "\" the\"");
        assert_eq!(super::quoted(""), "\"\"");
    }

    #[test]
    fn lengths_read_as_multiples_of_l() {
        let t = |n| super::times_l(n, 256);
        assert_eq!(
            [t(256), t(512), t(4096), t(128), t(64), t(384), t(0)],
            ["L", "2L", "16L", "L/2", "L/4", "1.50L", "0.00L"]
        );
        assert_eq!(super::times_l(5, 0), "");
    }
}
