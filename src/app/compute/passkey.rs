//! The pass-key lab's computations, a child of `compute` so that it reaches
//! the lab's model slots: one document built from the lab's settings, the
//! model's answer decoded greedily, every head's attention on the key
//! sentence, and accuracy over a length x depth grid, cell by cell. Knows
//! nothing of egui; the documents and the decoding are `lab::passkey`'s.

use super::{JobControl, Lab, ModelSlot, Resolved};
use crate::app::jobs::{FillerKey, InputAt, InputKey, JobKey, JobResult, KeySpan, ScalesKey};
use crate::app::state::{doublings, ModelChoice, MAX_GRID_TRIALS};
use crate::app::text;
use crate::lab::passkey::{greedy_answer, random_key, retrieves, Filler, FillerText, PasskeyBuilder, PasskeyDoc};
use crate::model::error::{Error, Result};
use crate::model::rng::Rng;

/// The accuracy map's documents come from this seed (keys and filler
/// spans), the same at every length, scale and model.
pub const GRID_SEED: u64 = 20_240_611;

/// One accuracy map: a model with its scales, a filler, the lengths, how
/// many depth rows and how many trials per cell.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GridKey {
    pub model: ModelChoice,
    pub scales: ScalesKey,
    pub filler: FillerKey,
    pub lengths: Vec<usize>,
    pub depths: usize,
    pub trials: usize,
    pub seed: u64,
}

/// L/2, L, 2L, ... up to `factor` x L, and up to the app's longest
/// length (`MAX_LENGTH`: an opened model's L may be far larger than the
/// bundled models').
pub fn grid_lengths(training_length: usize, factor: usize) -> Vec<usize> {
    doublings(
        (training_length / 2).max(1),
        training_length.saturating_mul(factor.max(1)),
    )
}

/// Depth of row `d` of `depths`: evenly from 0 (right after the
/// instruction) to 1 (right before the question); one row sits at 0.5.
pub fn grid_depth(d: usize, depths: usize) -> f64 {
    if depths > 1 {
        d as f64 / (depths - 1) as f64
    } else {
        0.5
    }
}

/// Trial k of depth row d: its own stream, the same at every length.
fn trial_seed(seed: u64, d: usize, k: usize) -> u64 {
    seed ^ ((d * MAX_GRID_TRIALS + k) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[derive(Debug, Clone)]
pub struct PasskeyAnswerResult {
    pub key: u32,
    /// The greedy answer as text, and whether its tokens are the key's.
    pub answer: String,
    pub correct: bool,
    pub length: usize,
    /// Where the key stands: its sentence and its digits.
    pub key_span: KeySpan,
    /// The document's tokens as text, up to the query (the answer after
    /// it is what the model is asked for).
    pub text: Vec<String>,
    /// The query that predicts the key's first token.
    pub query: usize,
}

#[derive(Debug, Clone)]
pub struct PasskeyHeadsResult {
    pub layers: usize,
    pub heads: usize,
    /// (layers, heads): the retrieving query's attention on the key's tokens.
    pub mass: Vec<f32>,
}

impl PasskeyHeadsResult {
    /// The head with the most attention on the key's tokens: (layer, head,
    /// mass); the first of equals, and never a head whose mass is not
    /// finite.
    pub fn best(&self) -> Option<(usize, usize, f32)> {
        self.mass
            .iter()
            .enumerate()
            .filter(|(_, m)| m.is_finite())
            .fold(None, |best: Option<(usize, f32)>, (i, &m)| match best {
                Some((_, bm)) if bm >= m => best,
                _ => Some((i, m)),
            })
            .map(|(i, m)| (i / self.heads.max(1), i % self.heads.max(1), m))
    }
}

/// One cell of the accuracy map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    Pending,
    /// The length cannot hold the pass-key format.
    TooShort,
    Done {
        correct: usize,
        trials: usize,
    },
}

impl Cell {
    pub fn accuracy(&self) -> Option<f64> {
        match *self {
            Cell::Done { correct, trials } if trials > 0 => Some(correct as f64 / trials as f64),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PasskeyGridResult {
    pub lengths: Vec<usize>,
    pub depths: Vec<f64>,
    /// (lengths, depths), filled in as each cell finishes.
    pub cells: Vec<Cell>,
}

impl PasskeyGridResult {
    pub fn cell(&self, length_index: usize, depth_index: usize) -> Cell {
        self.cells
            .get(length_index * self.depths.len() + depth_index)
            .copied()
            .unwrap_or(Cell::Pending)
    }

    pub fn finished(&self) -> usize {
        self.cells.iter().filter(|c| !matches!(c, Cell::Pending)).count()
    }

    /// This map over `lengths`: the cells of the lengths both have (each
    /// cell's trials are seeded by its depth and trial alone, so they are
    /// the same cells), the others pending.
    pub fn for_lengths(&self, lengths: &[usize]) -> PasskeyGridResult {
        let n = self.depths.len();
        let mut cells = vec![Cell::Pending; lengths.len() * n];
        for (li, length) in lengths.iter().enumerate() {
            if let Some(ri) = self.lengths.iter().position(|l| l == length) {
                for d in 0..n {
                    cells[li * n + d] = self.cell(ri, d);
                }
            }
        }
        PasskeyGridResult {
            lengths: lengths.to_vec(),
            depths: self.depths.clone(),
            cells,
        }
    }
}

/// The maps as CSV, one row per finished cell: series, length, depth,
/// trials, correct, accuracy (empty where the length is too short).
pub fn grid_csv(series: &[(&str, &PasskeyGridResult)]) -> String {
    let mut out = String::from("series,length,depth,trials,correct,accuracy\n");
    for (name, g) in series {
        let name = name.replace(['"', ','], " ");
        for (li, &length) in g.lengths.iter().enumerate() {
            for (d, &depth) in g.depths.iter().enumerate() {
                match g.cell(li, d) {
                    Cell::Pending => {}
                    Cell::TooShort => out.push_str(&format!("{name},{length},{depth:.3},0,0,\n")),
                    Cell::Done { correct, trials } => out.push_str(&format!(
                        "{name},{length},{depth:.3},{trials},{correct},{:.4}\n",
                        correct as f64 / trials.max(1) as f64
                    )),
                }
            }
        }
    }
    out
}

/// The real text a filler choice reads from (`None`: the repeated
/// sentences), made once per filler (the slot keeps the last one): each
/// document of the lab's map would tokenize and index it again.
fn filler_text(slot: &mut ModelSlot, filler: &FillerKey) -> Result<Option<FillerText>> {
    if let Some((_, f)) = slot.filler.as_ref().filter(|(k, _)| k == filler) {
        return Ok(Some(f.clone()));
    }
    let f = match filler {
        FillerKey::Repeated => return Ok(None),
        FillerKey::Validation => {
            let tokens = slot.validation_tokens()?.to_vec();
            FillerText::new(&slot.tokenizer, tokens)?
        }
        FillerKey::Pasted(t) if t.as_str().trim().is_empty() => return Err(Error::Input(text::PASSKEY_NO_TEXT.into())),
        FillerKey::Pasted(t) => FillerText::from_text(&slot.tokenizer, t.as_str())?,
    };
    slot.filler = Some((filler.clone(), f.clone()));
    Ok(Some(f))
}

/// The lab's document for `at` (its input must be `InputKey::PasskeyLab`);
/// filler spans are drawn from the key, so one key is one document.
fn lab_doc(slot: &mut ModelSlot, at: &InputAt) -> Result<PasskeyDoc> {
    let InputKey::PasskeyLab {
        key,
        depth_permille,
        filler,
    } = &at.input
    else {
        return Err(Error::Input("not a pass-key lab document".into()));
    };
    let text = filler_text(slot, filler)?;
    let builder = PasskeyBuilder::new(&slot.tokenizer)?;
    let shortest = builder.fixed_len(*key)? + 1;
    if at.length < shortest {
        return Err(Error::Input(text::passkey_too_short(at.length, shortest)));
    }
    let filler = text.as_ref().map_or(Filler::Repeated, Filler::Text);
    let mut rng = Rng::new(u64::from(*key));
    builder.build(at.length, f64::from(*depth_permille) / 1000.0, *key, filler, &mut rng)
}

/// The lab's document as the attention viewer's input.
pub(super) fn resolve(slot: &mut ModelSlot, at: &InputAt) -> Result<Resolved> {
    let doc = lab_doc(slot, at)?;
    let span = key_span(&slot.tokenizer, &doc)?;
    Ok(Resolved::of_doc(doc, span))
}

/// Where the key stands in a document: its sentence, and the sentence's
/// tokens that hold a digit (the sentence names the key twice).
pub(super) fn key_span(tok: &crate::model::tokenizer::Tokenizer, doc: &PasskeyDoc) -> Result<KeySpan> {
    let sentence = doc.key_position..doc.key_position + doc.key_len;
    let mut digits = Vec::new();
    for p in sentence.clone() {
        if tok.decode(&doc.tokens[p..=p])?.chars().any(|c| c.is_ascii_digit()) {
            digits.push(p);
        }
    }
    Ok(KeySpan { sentence, digits })
}

fn cancelled() -> Error {
    Error::Input("cancelled".into())
}

/// On the web the CPU engine shares the page's one thread: between
/// forwards, let a frame through.
async fn let_frames_through() {
    #[cfg(target_arch = "wasm32")]
    crate::app::web::yield_to_browser(0).await;
}

impl Lab {
    /// The pass-key lab's jobs.
    pub(super) async fn run_passkey(&mut self, key: &JobKey, ctl: &mut dyn JobControl) -> Result<JobResult> {
        match key {
            JobKey::PasskeyAnswer { at, scales } => self.passkey_answer(at, scales, ctl).await,
            JobKey::PasskeyHeads { at, scales } => self.passkey_heads(at, scales, ctl).await,
            JobKey::PasskeyGrid(g) => self.passkey_grid(g, ctl).await,
            _ => Err(Error::Input("not a pass-key lab job".into())),
        }
    }

    async fn passkey_answer(
        &mut self,
        at: &InputAt,
        scales: &ScalesKey,
        ctl: &mut dyn JobControl,
    ) -> Result<JobResult> {
        self.ensure_engine(at.model).await?;
        let hs = self.scales(at.model, scales)?;
        let doc = lab_doc(self.slot(at.model)?, at)?;
        if !ctl.progress(0.1, text::PASSKEY_DECODING) {
            return Err(cancelled());
        }
        let answer = greedy_answer(self.engine(at.model)?, &doc, &hs).await?;
        let t = doc.tokens.len();
        let a = doc.answer_len;
        let key = match at.input {
            InputKey::PasskeyLab { key, .. } => key,
            _ => 0,
        };
        let text = self.token_texts(at.model, &doc.tokens[..t - a])?;
        let tok = &self.slot(at.model)?.tokenizer;
        Ok(JobResult::PasskeyAnswer(PasskeyAnswerResult {
            key,
            answer: tok.decode(&answer)?,
            key_span: key_span(tok, &doc)?,
            text,
            correct: answer == doc.tokens[t - a..],
            length: t,
            query: t - a - 1,
        }))
    }

    async fn passkey_heads(&mut self, at: &InputAt, scales: &ScalesKey, ctl: &mut dyn JobControl) -> Result<JobResult> {
        self.ensure_engine(at.model).await?;
        let hs = self.scales(at.model, scales)?;
        let doc = lab_doc(self.slot(at.model)?, at)?;
        let query = doc.tokens.len() - doc.answer_len - 1;
        let key_tokens = key_span(&self.slot(at.model)?.tokenizer, &doc)?.digits;
        let slot = self.slot(at.model)?;
        let (layers, heads) = (slot.config.num_layers, slot.config.num_heads);
        // One run of the model gives every head's row (on the web in
        // slices, the page drawing frames between them).
        #[cfg(not(target_arch = "wasm32"))]
        let rows = {
            if !ctl.progress(0.0, text::PASSKEY_RANKING) {
                return Err(cancelled());
            }
            crate::model::cpu::inspect::query_rows_every_head(&slot.config, &slot.params, &doc.tokens, &hs, query)?
        };
        #[cfg(target_arch = "wasm32")]
        let rows = {
            use crate::model::cpu::chunked::ChunkedForward;
            let mut fwd = ChunkedForward::new(&slot.config, &slot.params, &doc.tokens, &hs)?.capture_query(query);
            super::run_sliced(&mut fwd, ctl, text::PASSKEY_RANKING, 0.0, 1.0).await?;
            fwd.query_rows()
                .ok_or_else(|| Error::Engine("the query's rows were not kept".into()))?
        };
        let mass = rows
            .iter()
            .map(|row| key_tokens.iter().map(|&p| row[p]).sum())
            .collect();
        Ok(JobResult::PasskeyHeads(PasskeyHeadsResult { layers, heads, mass }))
    }

    async fn passkey_grid(&mut self, g: &GridKey, ctl: &mut dyn JobControl) -> Result<JobResult> {
        self.ensure_engine(g.model).await?;
        let hs = self.scales(g.model, &g.scales)?;
        let slot = self.slot(g.model)?;
        let text = filler_text(slot, &g.filler)?;
        let ModelSlot { tokenizer, engine, .. } = slot;
        let engine = engine
            .as_mut()
            .ok_or_else(|| Error::Engine("the engine is not started".into()))?;
        let builder = PasskeyBuilder::new(tokenizer)?;
        let shortest = builder.min_len()?;
        let filler = text.as_ref().map_or(Filler::Repeated, Filler::Text);
        let depths: Vec<f64> = (0..g.depths).map(|d| grid_depth(d, g.depths)).collect();
        let mut result = PasskeyGridResult {
            lengths: g.lengths.clone(),
            depths: depths.clone(),
            cells: vec![Cell::Pending; g.lengths.len() * depths.len()],
        };
        // Each cell's trials are seeded by its depth and trial alone, so a
        // stopped map's cells are those a whole run would have: it goes
        // on from them, and a map over more (or fewer) lengths takes those
        // of the lengths both have (`Jobs::same_cells`).
        if let Some(JobResult::PasskeyGrid(r)) = ctl.resumed() {
            if r.depths == result.depths {
                result.cells = r.for_lengths(&g.lengths).cells;
            }
        }
        // Progress in tokens run: a cell's cost grows with its length.
        let total: usize = g.lengths.iter().map(|l| l * g.trials * depths.len()).sum();
        let mut done = 0usize;
        for (li, &length) in g.lengths.iter().enumerate() {
            for (d, &depth) in depths.iter().enumerate() {
                let cell = li * depths.len() + d;
                if !matches!(result.cells[cell], Cell::Pending) {
                    done += length * g.trials;
                    continue;
                }
                if length < shortest {
                    result.cells[cell] = Cell::TooShort;
                    done += length * g.trials;
                    continue;
                }
                let mut correct = 0;
                let mut too_short = false;
                for k in 0..g.trials {
                    let message = text::grid_progress(length, depth, k + 1, g.trials);
                    if !ctl.progress(done as f32 / total.max(1) as f32, &message) {
                        return Err(cancelled());
                    }
                    let mut rng = Rng::new(trial_seed(g.seed, d, k));
                    let key = random_key(&mut rng);
                    done += length;
                    // A key whose sentence takes more tokens than the
                    // longest key's can still miss the format's minimum.
                    let Ok(doc) = builder.build(length, depth, key, filler, &mut rng) else {
                        too_short = true;
                        continue;
                    };
                    correct += retrieves(engine, &doc, &hs).await? as usize;
                    let_frames_through().await;
                }
                result.cells[cell] = if too_short {
                    Cell::TooShort
                } else {
                    Cell::Done {
                        correct,
                        trials: g.trials,
                    }
                };
                ctl.partial(JobResult::PasskeyGrid(result.clone()));
            }
        }
        Ok(JobResult::PasskeyGrid(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_depths_and_csv() {
        assert_eq!(grid_lengths(256, 8), vec![128, 256, 512, 1024, 2048]);
        assert_eq!(grid_lengths(256, 1), vec![128, 256]);
        // An opened model's L: never past the app's longest length, never
        // overflowing.
        assert_eq!(grid_lengths(4096, 16), vec![2048, 4096, 8192, 16384]);
        assert_eq!(grid_lengths(1 << 24, 16), Vec::<usize>::new());
        assert_eq!(grid_lengths(usize::MAX / 3, usize::MAX), Vec::<usize>::new());
        assert_eq!(grid_depth(0, 5), 0.0);
        assert_eq!(grid_depth(4, 5), 1.0);
        assert_eq!(grid_depth(0, 1), 0.5);
        assert_ne!(trial_seed(1, 0, 1), trial_seed(1, 1, 0));
        let g = PasskeyGridResult {
            lengths: vec![16, 128],
            depths: vec![0.0, 1.0],
            cells: vec![
                Cell::TooShort,
                Cell::TooShort,
                Cell::Done { correct: 3, trials: 4 },
                Cell::Pending,
            ],
        };
        assert_eq!(g.finished(), 3);
        assert_eq!(g.cell(1, 0).accuracy(), Some(0.75));
        let csv = grid_csv(&[("NoPE, s = 1", &g)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3], "NoPE  s = 1,128,0.000,4,3,0.7500");
        let heads = PasskeyHeadsResult {
            layers: 2,
            heads: 2,
            mass: vec![0.1, 0.4, 0.9, 0.2],
        };
        assert_eq!(heads.best(), Some((1, 0, 0.9)));
    }

    /// The best head is the first of equals and never one whose mass is
    /// not finite (a NaN compared as no number does).
    #[test]
    fn the_best_head_skips_masses_that_are_not_finite() {
        let best = |mass: Vec<f32>| {
            PasskeyHeadsResult {
                layers: 2,
                heads: 2,
                mass,
            }
            .best()
        };
        assert_eq!(best(vec![0.9, f32::NAN, 0.1, 0.2]), Some((0, 0, 0.9)));
        assert_eq!(best(vec![0.1, 0.2, 0.3, f32::NAN]), Some((1, 0, 0.3)));
        assert_eq!(best(vec![0.5, 0.5, f32::INFINITY, 0.1]), Some((0, 0, 0.5)));
        assert_eq!(best(vec![f32::NAN; 4]), None);
    }
}
