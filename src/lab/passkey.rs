//! Passkey retrieval: a 5-digit key hidden at some depth in filler text,
//! asked for at the end. The format is the one the paper measures with
//! (an instruction line, filler, the key sentence, more filler, the
//! question). Documents are built in token space, so a document is exactly
//! the length asked for; training (`lab::train`) and evaluation share the
//! builder.

use serde::Serialize;

use super::eval::{row_nll, Progress};
use crate::model::engine::{Engine, ForwardOptions, LogitsRequest};
use crate::model::error::{Error, Result};
use crate::model::head_scales::HeadScales;
use crate::model::rng::Rng;
use crate::model::tokenizer::Tokenizer;

pub const INSTRUCTION: &str = "There is an important info hidden inside a lot of irrelevant text. \
Find it and memorize it. I will quiz you about the important information there.";
/// The paper's filler: a few plain sentences, repeated.
pub const FILLER: &str = " The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
pub const QUESTION: &str = " What is the pass key? The pass key is ";

fn key_sentence(key: u32) -> String {
    format!(" The pass key is {key}. Remember it. {key} is the pass key.")
}

/// Where the filler comes from.
#[derive(Debug, Clone, Copy)]
pub enum Filler<'a> {
    /// The paper's sentences, repeated.
    Repeated,
    /// Real text, drawn in spans at random offsets: the harder variant.
    Text(&'a FillerText),
}

/// A real text as filler: its tokens, and where words start, so that spans
/// begin and end on word boundaries (the text's own line breaks are kept,
/// being tokens like any other). A text shorter than a span is cycled:
/// read again from its start (`cycles_for` tells a caller when).
#[derive(Debug, Clone)]
pub struct FillerText {
    tokens: Vec<u32>,
    /// `starts_word[p]`: a word starts at token p (its text begins with
    /// white space, or the previous token's ends with it, or p = 0).
    starts_word: Vec<bool>,
    /// Positions where a word starts, to draw span starts from.
    word_starts: Vec<usize>,
}

/// Tries at drawing a span that ends on a word boundary too, before taking
/// one that only starts on one (English BPE text: most tokens start words,
/// so the first few tries almost always succeed).
const SPAN_TRIES: usize = 256;

impl FillerText {
    pub fn new(tok: &Tokenizer, tokens: Vec<u32>) -> Result<Self> {
        if tokens.is_empty() {
            return Err(Error::Input("the filler text is empty".into()));
        }
        // Each distinct token decoded once: (starts with space, ends with space).
        let mut edges = std::collections::HashMap::new();
        for &t in &tokens {
            if let std::collections::hash_map::Entry::Vacant(e) = edges.entry(t) {
                let s = tok.decode(&[t])?;
                e.insert((
                    s.chars().next().is_some_and(char::is_whitespace),
                    s.chars().last().is_some_and(char::is_whitespace),
                ));
            }
        }
        let starts_word: Vec<bool> = (0..tokens.len())
            .map(|p| p == 0 || edges[&tokens[p]].0 || edges[&tokens[p - 1]].1)
            .collect();
        let word_starts = (0..tokens.len()).filter(|&p| starts_word[p]).collect();
        Ok(FillerText {
            tokens,
            starts_word,
            word_starts,
        })
    }

    /// Tokenizes `text` and indexes its word boundaries.
    pub fn from_text(tok: &Tokenizer, text: &str) -> Result<Self> {
        Self::new(tok, tok.encode(text)?)
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// Whether a span of `count` tokens has to read the text more than once.
    pub fn cycles_for(&self, count: usize) -> bool {
        count >= self.tokens.len()
    }

    /// `count` tokens from a random word start, ending before a word start
    /// where one can be found in `SPAN_TRIES` draws; read cyclically.
    fn span(&self, count: usize, rng: &mut Rng) -> Vec<u32> {
        let n = self.tokens.len();
        let mut start = self.word_starts[rng.below(self.word_starts.len())];
        for _ in 0..SPAN_TRIES {
            if self.starts_word[(start + count) % n] {
                break;
            }
            start = self.word_starts[rng.below(self.word_starts.len())];
        }
        (start..start + count).map(|p| self.tokens[p % n]).collect()
    }
}

#[derive(Debug, Clone)]
pub struct PasskeyDoc {
    pub tokens: Vec<u32>,
    /// The answer: the key's tokens, the last `answer_len` of `tokens`.
    pub answer_len: usize,
    /// Index of the key sentence's first token.
    pub key_position: usize,
    /// Tokens of the key sentence, from `key_position`.
    pub key_len: usize,
}

/// Tokenized pieces of the format, encoded once.
pub struct PasskeyBuilder<'t> {
    tok: &'t Tokenizer,
    bos: Option<u32>,
    instruction: Vec<u32>,
    filler: Vec<u32>,
    question: Vec<u32>,
}

impl<'t> PasskeyBuilder<'t> {
    pub fn new(tok: &'t Tokenizer) -> Result<Self> {
        // A tokenizer that drops the format's characters (no unknown
        // token, none of them in its vocabulary) cannot make documents of
        // the asked length: said here, not found as short documents later.
        let encode = |what: &str, text: &str| -> Result<Vec<u32>> {
            let t = tok.encode(text)?;
            if t.is_empty() {
                return Err(Error::Input(format!(
                    "the tokenizer encodes the pass-key {what} as nothing: {text:?}"
                )));
            }
            Ok(t)
        };
        Ok(PasskeyBuilder {
            tok,
            bos: tok.bos_id(),
            instruction: encode("instruction", INSTRUCTION)?,
            filler: encode("filler", FILLER)?,
            question: encode("question", QUESTION)?,
        })
    }

    /// The key sentence, the question and the answer for `key`.
    fn key_parts(&self, key: u32) -> Result<(Vec<u32>, Vec<u32>, usize)> {
        let sentence = self.tok.encode(&key_sentence(key))?;
        // The answer is what the key adds to the question's tokens, so a
        // tokenizer that merges the space into the digits is handled too.
        let full = self.tok.encode(&format!("{QUESTION}{key}"))?;
        let common = full.iter().zip(&self.question).take_while(|(a, b)| a == b).count();
        let answer_len = full.len() - common;
        if answer_len == 0 {
            return Err(Error::Input("the tokenizer encodes the pass key as nothing".into()));
        }
        Ok((sentence, full, answer_len))
    }

    /// Tokens every document with these key parts needs besides filler.
    fn fixed_len_of(&self, sentence: &[u32], question_answer: &[u32]) -> usize {
        self.bos.is_some() as usize + self.instruction.len() + sentence.len() + question_answer.len()
    }

    /// Tokens every document of this key needs besides filler.
    pub fn fixed_len(&self, key: u32) -> Result<usize> {
        let (sentence, question_answer, _) = self.key_parts(key)?;
        Ok(self.fixed_len_of(&sentence, &question_answer))
    }

    /// Shortest document this format allows (with a 5-digit key).
    pub fn min_len(&self) -> Result<usize> {
        Ok(self.fixed_len(99_999)? + 1)
    }

    /// A document of exactly `length` tokens with `key` at `depth` (0 = right
    /// after the instruction, 1 = right before the question) of the filler.
    pub fn build(&self, length: usize, depth: f64, key: u32, filler: Filler, rng: &mut Rng) -> Result<PasskeyDoc> {
        let (sentence, question_answer, answer_len) = self.key_parts(key)?;
        let fixed = self.fixed_len_of(&sentence, &question_answer);
        if length <= fixed {
            return Err(Error::Input(format!(
                "a pass-key document of {length} tokens is too short: the format alone takes {fixed}"
            )));
        }
        let n = length - fixed;
        let pre = ((depth.clamp(0.0, 1.0) * n as f64).round() as usize).min(n);
        let post = n - pre;
        let take = |count: usize, rng: &mut Rng| -> Vec<u32> {
            match filler {
                Filler::Repeated => self.filler.iter().copied().cycle().take(count).collect(),
                Filler::Text(text) => text.span(count, rng),
            }
        };
        let mut tokens = Vec::with_capacity(length);
        tokens.extend(self.bos);
        tokens.extend_from_slice(&self.instruction);
        tokens.extend(take(pre, rng));
        let key_position = tokens.len();
        tokens.extend_from_slice(&sentence);
        tokens.extend(take(post, rng));
        tokens.extend_from_slice(&question_answer);
        debug_assert_eq!(tokens.len(), length);
        Ok(PasskeyDoc {
            tokens,
            answer_len,
            key_position,
            key_len: sentence.len(),
        })
    }
}

/// A random 5-digit key.
pub fn random_key(rng: &mut Rng) -> u32 {
    10_000 + rng.below(90_000) as u32
}

#[derive(Debug, Clone, Serialize)]
pub struct PasskeyResult {
    pub length: usize,
    pub trials: usize,
    /// Share of trials whose every key token is the greedy (argmax) choice.
    /// Teacher-forced argmax on all key tokens is exactly greedy decoding
    /// producing the key.
    pub accuracy: f64,
    /// Mean over trials of the mean -ln p of the key tokens (nats).
    pub key_loss: f64,
    /// Share of key tokens that are the argmax.
    pub token_accuracy: f64,
    /// Accuracy per depth bucket: bucket i holds the trials whose key sits
    /// at a depth in [i, i + 1) / `DEPTH_BUCKETS` (the last one takes
    /// depth 1 too). Depths are spread evenly over the trials, so with
    /// fewer trials than buckets some are empty: `NaN` (`null` in JSON).
    pub accuracy_by_depth: Vec<f64>,
    /// The trials in each depth bucket (0 where `accuracy_by_depth` is
    /// `NaN`).
    pub trials_by_depth: Vec<usize>,
    /// Per layer and head, the mean entropy (bits) of the attention row of
    /// the query that predicts the key's first token: the retrieving query.
    pub retrieval_entropy_bits: Vec<Vec<f64>>,
    /// Mean over layers, heads and positions.
    pub mean_entropy_bits: f64,
}

impl PasskeyResult {
    /// The retrieving query's entropy (bits), the mean over every layer
    /// and head.
    pub fn mean_retrieval_entropy_bits(&self) -> f64 {
        let e = &self.retrieval_entropy_bits;
        let n = e.iter().map(|x| x.len()).sum::<usize>() as f64;
        e.iter().flatten().sum::<f64>() / n
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PasskeyReport {
    pub results: Vec<PasskeyResult>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// Number of depth buckets reported per length.
pub const DEPTH_BUCKETS: usize = 10;

/// The trials of one length: depths evenly spread over [0, 1], keys from
/// `seed` (the same keys and depths at every length and scale, so rows
/// compare pair by pair).
pub fn trial_docs(
    builder: &PasskeyBuilder,
    length: usize,
    trials: usize,
    seed: u64,
    filler: Filler,
) -> Result<Vec<(f64, PasskeyDoc)>> {
    (0..trials)
        .map(|k| {
            let depth = if trials > 1 {
                k as f64 / (trials - 1) as f64
            } else {
                0.5
            };
            let mut rng = Rng::new(seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let key = random_key(&mut rng);
            builder.build(length, depth, key, filler, &mut rng).map(|d| (depth, d))
        })
        .collect()
}

/// The argmax of each answer step with the key's tokens given (teacher
/// forced): one forward, no entropy.
async fn answer_argmax<E: Engine>(engine: &mut E, doc: &PasskeyDoc, head_scales: &HeadScales) -> Result<Vec<u32>> {
    let a = doc.answer_len;
    let out = engine
        .forward(
            &doc.tokens,
            head_scales,
            &ForwardOptions {
                logits: LogitsRequest::Last(a + 1),
                ..Default::default()
            },
        )
        .await?;
    let logits = out
        .logits
        .ok_or_else(|| Error::Engine("engine returned no logits".into()))?;
    let vocab = engine.config().vocab_size;
    Ok(logits.chunks_exact(vocab).take(a).map(argmax).collect())
}

/// The first highest entry (ties go to the lowest id).
fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
        )
        .0 as u32
}

/// Whether greedy decoding after the question produces the key: the
/// criterion of [`PasskeyResult::accuracy`], in one forward.
pub async fn retrieves<E: Engine>(engine: &mut E, doc: &PasskeyDoc, head_scales: &HeadScales) -> Result<bool> {
    let t = doc.tokens.len();
    Ok(answer_argmax(engine, doc, head_scales).await? == doc.tokens[t - doc.answer_len..])
}

/// The model's own answer: `answer_len` tokens decoded greedily after the
/// question. The teacher-forced argmaxes are greedy decoding's own up to
/// and including the first that misses the key, so one forward suffices
/// when the model is right and each token after a miss takes one more.
pub async fn greedy_answer<E: Engine>(engine: &mut E, doc: &PasskeyDoc, head_scales: &HeadScales) -> Result<Vec<u32>> {
    let t = doc.tokens.len();
    let a = doc.answer_len;
    let forced = answer_argmax(engine, doc, head_scales).await?;
    let mut answer = Vec::with_capacity(a);
    for (&p, &key) in forced.iter().zip(&doc.tokens[t - a..]) {
        answer.push(p);
        if p != key {
            break;
        }
    }
    let mut tokens = doc.tokens[..t - a].to_vec();
    tokens.extend_from_slice(&answer);
    while answer.len() < a {
        let out = engine
            .forward(
                &tokens,
                head_scales,
                &ForwardOptions {
                    logits: LogitsRequest::Last(1),
                    ..Default::default()
                },
            )
            .await?;
        let logits = out
            .logits
            .ok_or_else(|| Error::Engine("engine returned no logits".into()))?;
        let next = argmax(&logits);
        answer.push(next);
        tokens.push(next);
    }
    Ok(answer)
}

/// Scores one document: (all exact, key loss, exact tokens, retrieval-row
/// entropy per layer*head, mean entropy).
async fn score<E: Engine>(
    engine: &mut E,
    doc: &PasskeyDoc,
    head_scales: &HeadScales,
) -> Result<(bool, f64, usize, Vec<f64>, f64)> {
    let t = doc.tokens.len();
    let a = doc.answer_len;
    let out = engine
        .forward(
            &doc.tokens,
            head_scales,
            &ForwardOptions {
                logits: LogitsRequest::Last(a + 1),
                entropy: true,
                ..Default::default()
            },
        )
        .await?;
    let logits = out
        .logits
        .ok_or_else(|| Error::Engine("engine returned no logits".into()))?;
    let vocab = engine.config().vocab_size;
    let (mut exact, mut loss) = (0usize, 0.0f64);
    for j in 0..a {
        let row = &logits[j * vocab..(j + 1) * vocab];
        let target = doc.tokens[t - a + j] as usize;
        loss += row_nll(row, target)?;
        // Ties go to the lowest id, as argmax does.
        let argmax = row
            .iter()
            .enumerate()
            .fold(
                (0, f32::NEG_INFINITY),
                |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) },
            )
            .0;
        exact += (argmax == target) as usize;
    }
    let ent = out
        .entropy_bits
        .ok_or_else(|| Error::Engine("engine returned no entropy".into()))?;
    let lh = ent.len() / t;
    let query = t - a - 1;
    let retrieval: Vec<f64> = (0..lh).map(|i| ent[i * t + query] as f64).collect();
    let mean = ent.iter().map(|&x| x as f64).sum::<f64>() / ent.len() as f64;
    Ok((exact == a, loss / a as f64, exact, retrieval, mean))
}

/// Retrieval at each length over `trials` documents.
#[allow(clippy::too_many_arguments)]
pub async fn passkey_lengths<E: Engine>(
    engine: &mut E,
    builder: &PasskeyBuilder<'_>,
    lengths: &[usize],
    trials: usize,
    seed: u64,
    filler: Filler<'_>,
    head_scales: &HeadScales,
    progress: &mut dyn Progress,
) -> Result<PasskeyReport> {
    if trials == 0 {
        return Err(Error::Input("--trials must be at least 1".into()));
    }
    let cfg = engine.config().clone();
    let heads = cfg.num_heads;
    let plan: Vec<Vec<(f64, PasskeyDoc)>> = lengths
        .iter()
        .map(|&l| trial_docs(builder, l, trials, seed, filler))
        .collect::<Result<_>>()?;
    let total: usize = lengths.iter().map(|&l| l * trials).sum();
    let mut done = 0;
    let mut results = Vec::new();
    for (docs, &length) in plan.iter().zip(lengths) {
        let mut hits = 0usize;
        let mut loss = 0.0;
        let mut exact_tokens = 0usize;
        let mut answer_tokens = 0usize;
        let mut by_depth = [(0usize, 0usize); DEPTH_BUCKETS];
        let mut retrieval = vec![0.0f64; cfg.num_layers * heads];
        let mut mean_ent = 0.0;
        for (n, (depth, doc)) in docs.iter().enumerate() {
            if !progress.update(done, total, &format!("length {length}, trial {}/{trials}", n + 1)) {
                return Ok(PasskeyReport {
                    results,
                    cancelled: true,
                });
            }
            let (ok, l, exact, r, m) = score(engine, doc, head_scales).await?;
            hits += ok as usize;
            loss += l;
            exact_tokens += exact;
            answer_tokens += doc.answer_len;
            let b = ((depth * DEPTH_BUCKETS as f64) as usize).min(DEPTH_BUCKETS - 1);
            by_depth[b].0 += ok as usize;
            by_depth[b].1 += 1;
            for (acc, x) in retrieval.iter_mut().zip(r) {
                *acc += x;
            }
            mean_ent += m;
            done += length;
        }
        let n = docs.len() as f64;
        results.push(PasskeyResult {
            length,
            trials: docs.len(),
            accuracy: hits as f64 / n,
            key_loss: loss / n,
            token_accuracy: exact_tokens as f64 / answer_tokens as f64,
            accuracy_by_depth: by_depth
                .iter()
                .map(|&(h, c)| if c == 0 { f64::NAN } else { h as f64 / c as f64 })
                .collect(),
            trials_by_depth: by_depth.iter().map(|&(_, c)| c).collect(),
            retrieval_entropy_bits: retrieval
                .chunks(heads)
                .map(|r| r.iter().map(|x| x / n).collect())
                .collect(),
            mean_entropy_bits: mean_ent / n,
        });
    }
    progress.update(total, total, "done");
    Ok(PasskeyReport {
        results,
        cancelled: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> Tokenizer {
        let text = format!("{INSTRUCTION}\n{FILLER}\n{QUESTION} 12345\n").repeat(10)
            + &"the state of the union is strong and the people are free.\n".repeat(20);
        Tokenizer::train_byte_level_bpe(&text, 400).unwrap()
    }

    #[test]
    fn documents_have_the_asked_length_and_end_with_the_key() {
        let tok = tok();
        let b = PasskeyBuilder::new(&tok).unwrap();
        let mut rng = Rng::new(1);
        let text = FillerText::from_text(&tok, &"we the people of the united states. ".repeat(50)).unwrap();
        for &(len, depth) in &[(b.min_len().unwrap(), 0.0), (200, 0.5), (300, 1.0), (150, 0.3)] {
            for filler in [Filler::Repeated, Filler::Text(&text)] {
                let d = b.build(len, depth, 48213, filler, &mut rng).unwrap();
                assert_eq!(d.tokens.len(), len);
                assert_eq!(d.answer_len, 5);
                assert_eq!(d.tokens[0], tok.bos_id().unwrap());
                let answer = tok.decode(&d.tokens[len - 5..]).unwrap();
                assert_eq!(answer, "48213");
                let rest = tok.decode(&d.tokens[d.key_position..]).unwrap();
                assert!(rest.trim_start().starts_with("The pass key is 48213."), "{rest}");
            }
        }
        let shallow = b.build(300, 0.0, 11111, Filler::Repeated, &mut rng).unwrap();
        let deep = b.build(300, 1.0, 11111, Filler::Repeated, &mut rng).unwrap();
        assert!(shallow.key_position < deep.key_position);
        let err = b
            .build(10, 0.5, 11111, Filler::Repeated, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too short"), "{err}");
    }

    #[test]
    fn text_filler_spans_keep_words_whole_and_cycle_a_short_text() {
        let tok = tok();
        let b = PasskeyBuilder::new(&tok).unwrap();
        let source = "the state of the union\nis strong and the people are free.\n".repeat(40);
        let text = FillerText::from_text(&tok, &source).unwrap();
        let mut rng = Rng::new(5);
        for trial in 0..20 {
            let d = b
                .build(220, trial as f64 / 19.0, 40000 + trial, Filler::Text(&text), &mut rng)
                .unwrap();
            let pre = tok.decode(&d.tokens[..d.key_position]).unwrap();
            let filler = pre.split("there.").nth(1).unwrap();
            // Every word of the filler is a whole word of the source.
            for w in filler.split_whitespace() {
                assert!(
                    source.split_whitespace().any(|x| x == w),
                    "cut word {w:?} in {filler:?}"
                );
            }
        }
        // Line breaks survive.
        let d = b.build(300, 0.5, 12345, Filler::Text(&text), &mut rng).unwrap();
        assert!(tok.decode(&d.tokens).unwrap().contains('\n'));
        // A text shorter than the filler is read again from its start.
        let short = FillerText::from_text(&tok, "the people are free.\n").unwrap();
        assert!(short.cycles_for(100) && !text.cycles_for(100));
        let d = b.build(200, 0.5, 12345, Filler::Text(&short), &mut rng).unwrap();
        assert_eq!(d.tokens.len(), 200);
        assert!(tok.decode(&d.tokens).unwrap().matches("people are free").count() > 5);
        assert!(FillerText::from_text(&tok, "").is_err());
    }

    #[test]
    fn trials_repeat_keys_and_spread_depths() {
        let tok = tok();
        let b = PasskeyBuilder::new(&tok).unwrap();
        let a = trial_docs(&b, 120, 4, 9, Filler::Repeated).unwrap();
        let c = trial_docs(&b, 200, 4, 9, Filler::Repeated).unwrap();
        let depths: Vec<f64> = a.iter().map(|(d, _)| *d).collect();
        assert_eq!(depths, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
        for ((_, x), (_, y)) in a.iter().zip(&c) {
            assert_eq!(x.tokens[x.tokens.len() - 5..], y.tokens[y.tokens.len() - 5..]);
        }
    }

    #[test]
    fn greedy_answer_equals_decoding_token_by_token() {
        use crate::model::config::{ModelConfig, PositionEncoding};
        use crate::model::cpu::CpuEngine;
        use crate::model::params::Params;
        let tok = tok();
        let config = ModelConfig {
            hidden_size: 32,
            intermediate_size: 48,
            num_layers: 2,
            num_heads: 2,
            num_kv_heads: 2,
            head_dim: 16,
            vocab_size: tok.vocab_size(),
            rms_norm_eps: 1e-5,
            tie_word_embeddings: true,
            training_length: 64,
            position_encoding: PositionEncoding::None,
            bos_token_id: tok.bos_id(),
        };
        let hs = HeadScales::ones(&config);
        let b = PasskeyBuilder::new(&tok).unwrap();
        let mut rng = Rng::new(3);
        let doc = b.build(120, 0.3, 40718, Filler::Repeated, &mut rng).unwrap();
        assert!(
            doc.answer_len >= 2,
            "the key is one token: nothing after a miss to decode"
        );
        let (t, a) = (doc.tokens.len(), doc.answer_len);
        let mut missed_first = false;
        for seed in 0..4 {
            let mut engine = CpuEngine::new(config.clone(), Params::random(&config, 0.4, seed)).unwrap();
            let fast = pollster::block_on(greedy_answer(&mut engine, &doc, &hs)).unwrap();
            // One forward per answer token, the plain way.
            let mut tokens = doc.tokens[..t - a].to_vec();
            for _ in 0..a {
                let out = pollster::block_on(engine.forward(
                    &tokens,
                    &hs,
                    &ForwardOptions {
                        logits: LogitsRequest::Last(1),
                        ..Default::default()
                    },
                ))
                .unwrap();
                tokens.push(argmax(&out.logits.unwrap()));
            }
            assert_eq!(fast, tokens[t - a..], "seed {seed}");
            let right = pollster::block_on(retrieves(&mut engine, &doc, &hs)).unwrap();
            assert_eq!(right, fast == doc.tokens[t - a..]);
            missed_first |= fast[0] != doc.tokens[t - a];
        }
        // Random weights miss the key: the tokens after a miss were decoded.
        assert!(missed_first);
    }
}
