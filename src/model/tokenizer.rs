//! `tokenizer.json` through the `tokenizers` crate, and training of the
//! byte-level BPE that `nopescope init` ships with a fresh model.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, TokenizerBuilder};

use super::error::{Error, Result};

pub const BOS_TOKEN: &str = "<s>";
pub const EOS_TOKEN: &str = "</s>";

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({}, {} entries)", self.path.display(), self.vocab_size())
    }
}

impl Tokenizer {
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        // `tokenizers` 0.23 panics on some malformed JSON inside a component
        // (found by fuzzing: `{"decoder":{]}`); checking the syntax first
        // turns every such file into an error.
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return Err(Error::Tokenizer {
                path: path.to_path_buf(),
                message: format!("not valid JSON: {e}"),
            });
        }
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Tokenizer {
            inner,
            path: path.to_path_buf(),
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(&bytes, path)
    }

    /// Trains a byte-level BPE of at most `vocab_size` entries on `text`, with
    /// `<s>` and `</s>` as special tokens 0 and 1. Byte-level means every
    /// input can be encoded: the 256 byte symbols are always in the alphabet.
    /// Digits are split one per token before the byte-level step, so a
    /// number is always its digits (a 5-digit pass key is 5 tokens, each seen
    /// often in training, rather than rare multi-digit merges).
    pub fn train_byte_level_bpe(text: &str, vocab_size: usize) -> Result<Self> {
        let path = PathBuf::from("(trained tokenizer)");
        let err = |e: tokenizers::Error| Error::Tokenizer {
            path: path.clone(),
            message: e.to_string(),
        };
        if text.trim().is_empty() {
            return Err(Error::Input("cannot train a tokenizer on empty text".into()));
        }
        let min_vocab = 256 + 2;
        if vocab_size < min_vocab {
            return Err(Error::config(
                "vocab_size",
                format!("{vocab_size} is below the {min_vocab} entries a byte-level BPE needs"),
            ));
        }
        let mut trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![
                AddedToken::from(BOS_TOKEN, true),
                AddedToken::from(EOS_TOKEN, true),
            ])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let pre = Sequence::new(vec![
            PreTokenizerWrapper::Digits(Digits::new(true)),
            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
        ]);
        let mut builder = TokenizerBuilder::<BPE, NormalizerWrapper, Sequence, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(pre))
            .with_post_processor(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevel::new(false, true, true)))
            .build()
            .map_err(err)?;
        // Lines are the training sequences: the pre-tokenizer splits words anyway.
        builder
            .train(&mut trainer, text.lines().filter(|l| !l.is_empty()))
            .map_err(err)?;
        let json = builder.to_string(false).map_err(err)?;
        let inner = tokenizers::Tokenizer::from_str(&json).map_err(err)?;
        Ok(Tokenizer { inner, path })
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &Path) -> Result<()> {
        super::files::write_atomic(path, self.to_json()?.as_bytes())
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.inner.token_to_id(BOS_TOKEN)
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of the start of `text`, read in `word_pieces` of about
    /// `piece_bytes` until more than `max_tokens` are in (a long text is
    /// then not read to its end; the ids are the whole text's, cut after
    /// some piece).
    pub fn encode_up_to(&self, text: &str, piece_bytes: usize, max_tokens: usize) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for piece in word_pieces(text, piece_bytes) {
            ids.extend(self.encode(piece)?);
            if ids.len() > max_tokens {
                break;
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

/// `text` cut into consecutive pieces of about `piece_bytes` (or more),
/// each cut before a space that has an ASCII letter on both sides. The
/// byte-level pre-tokenizer splits there anyway ("word" + " Word"), so the
/// pieces' tokens, concatenated, are the whole text's; a caller can then
/// tokenize a long text a piece at a time (the web page does, between
/// frames). A text with no such space is one piece.
pub fn word_pieces(text: &str, piece_bytes: usize) -> Vec<&str> {
    let b = text.as_bytes();
    let cut_ok = |i: usize| {
        i >= 1 && i + 1 < b.len() && b[i] == b' ' && b[i - 1].is_ascii_alphabetic() && b[i + 1].is_ascii_alphabetic()
    };
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut i = piece_bytes.max(1);
    while i < b.len() {
        if cut_ok(i) {
            pieces.push(&text[start..i]);
            start = i;
            i += piece_bytes.max(1);
        } else {
            i += 1;
        }
    }
    pieces.push(&text[start..]);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bundled tokenizer on the shipped validation text: tokenized in
    /// pieces of 20,000 bytes (as the web page does) it gives the same
    /// tokens as whole.
    #[test]
    fn pieces_tokenize_as_the_whole_text() {
        let tok = Tokenizer::from_bytes(
            include_bytes!("../../assets/models/nope-sotu/tokenizer.json"),
            Path::new("tokenizer.json"),
        )
        .unwrap();
        let text = include_str!("../../assets/text/sotu-validation.txt");
        let pieces = word_pieces(text, 20_000);
        assert!(pieces.len() > 10, "{} pieces", pieces.len());
        assert_eq!(pieces.concat(), text);
        let mut ids = Vec::new();
        for p in &pieces {
            ids.extend(tok.encode(p).unwrap());
        }
        assert_eq!(ids, tok.encode(text).unwrap());
        assert_eq!(word_pieces("no-break-here", 3), vec!["no-break-here"]);
        assert_eq!(word_pieces("ab cd, 12 ef gh", 2), vec!["ab", " cd, 12 ef", " gh"]);
    }

    #[test]
    fn trains_encodes_and_round_trips() {
        let text = "the state of the union is strong.\nthe union of the states.\n".repeat(20);
        let tok = Tokenizer::train_byte_level_bpe(&text, 300).unwrap();
        assert!(tok.vocab_size() <= 300 && tok.vocab_size() > 258);
        assert_eq!(tok.bos_id(), Some(0));
        let ids = tok.encode("the union, 1790: ünïcode").unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), "the union, 1790: ünïcode");
        let key = tok.encode("12345").unwrap();
        assert_eq!(key.len(), 5, "digits are one token each");
        assert_eq!(tok.decode(&tok.encode("is 12345.").unwrap()).unwrap(), "is 12345.");
        let again = Tokenizer::from_bytes(tok.to_json().unwrap().as_bytes(), Path::new("t.json")).unwrap();
        assert_eq!(
            again.encode("state of the union").unwrap(),
            tok.encode("state of the union").unwrap()
        );
        assert!(Tokenizer::from_bytes(b"{not json", Path::new("bad.json"))
            .unwrap_err()
            .to_string()
            .contains("bad.json"));
        assert!(Tokenizer::train_byte_level_bpe("  \n", 300).is_err());
        let e = Tokenizer::from_bytes(br#"{"decoder":{]}"#, Path::new("fuzzed.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuzzed.json") && e.contains("JSON"), "{e}");
    }
}
