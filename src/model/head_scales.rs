//! One attention scale per query head per layer: logits = s * q.k / sqrt(d).
//! Plain NoPE is all ones; a uniform scale is the case of all equal. Saved as
//! a small JSON file beside the model (`head_scales.json`).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::config::ModelConfig;
use super::error::{Error, Result};

pub const HEAD_SCALES_FILE: &str = "head_scales.json";

#[derive(Debug, Clone, PartialEq)]
pub struct HeadScales {
    pub num_layers: usize,
    pub num_heads: usize,
    /// (L, H), row-major.
    pub values: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct HeadScalesFile {
    /// One row per layer, one scale per query head.
    head_scales: Vec<Vec<f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

impl HeadScales {
    pub fn uniform(config: &ModelConfig, s: f32) -> Result<Self> {
        let hs = HeadScales {
            num_layers: config.num_layers,
            num_heads: config.num_heads,
            values: vec![s; config.num_layers * config.num_heads],
        };
        hs.validate(None)?;
        Ok(hs)
    }

    pub fn ones(config: &ModelConfig) -> Self {
        HeadScales {
            num_layers: config.num_layers,
            num_heads: config.num_heads,
            values: vec![1.0; config.num_layers * config.num_heads],
        }
    }

    pub fn get(&self, layer: usize, head: usize) -> f32 {
        self.values[layer * self.num_heads + head]
    }

    /// Every scale must be a finite positive number.
    pub fn validate(&self, path: Option<&Path>) -> Result<()> {
        let err = |message: String| Error::HeadScales {
            path: path.map(Path::to_path_buf),
            message,
        };
        if self.values.len() != self.num_layers * self.num_heads {
            return Err(err(format!(
                "{} values for {} layers x {} heads",
                self.values.len(),
                self.num_layers,
                self.num_heads
            )));
        }
        for (i, &s) in self.values.iter().enumerate() {
            if !(s.is_finite() && s > 0.0) {
                return Err(err(format!(
                    "layer {} head {}: scale {s} is not a finite positive number",
                    i / self.num_heads.max(1),
                    i % self.num_heads.max(1)
                )));
            }
        }
        Ok(())
    }

    /// Checks the shape against a model as well as the values.
    pub fn check_for(&self, config: &ModelConfig, path: Option<&Path>) -> Result<()> {
        if self.num_layers != config.num_layers || self.num_heads != config.num_heads {
            return Err(Error::HeadScales {
                path: path.map(Path::to_path_buf),
                message: format!(
                    "shape ({}, {}) does not match the model's {} layers x {} query heads",
                    self.num_layers, self.num_heads, config.num_layers, config.num_heads
                ),
            });
        }
        self.validate(path)
    }

    pub fn from_json(text: &str, path: Option<&Path>) -> Result<Self> {
        let f: HeadScalesFile = serde_json::from_str(text).map_err(|e| Error::HeadScales {
            path: path.map(Path::to_path_buf),
            message: format!("not a head-scales file ({e}); expected {{\"head_scales\": [[layer 0 heads..], ..]}}"),
        })?;
        let num_layers = f.head_scales.len();
        let num_heads = f.head_scales.first().map_or(0, Vec::len);
        if num_layers == 0 || num_heads == 0 {
            return Err(Error::HeadScales {
                path: path.map(Path::to_path_buf),
                message: "no scales".into(),
            });
        }
        if let Some((l, row)) = f.head_scales.iter().enumerate().find(|(_, r)| r.len() != num_heads) {
            return Err(Error::HeadScales {
                path: path.map(Path::to_path_buf),
                message: format!("layer {l} has {} scales, layer 0 has {num_heads}", row.len()),
            });
        }
        let hs = HeadScales {
            num_layers,
            num_heads,
            values: f.head_scales.concat(),
        };
        hs.validate(path)?;
        Ok(hs)
    }

    pub fn to_json(&self, note: Option<String>) -> String {
        let f = HeadScalesFile {
            head_scales: self.values.chunks(self.num_heads).map(<[f32]>::to_vec).collect(),
            note,
        };
        serde_json::to_string_pretty(&f).expect("head scales serialize")
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(path: &Path, config: &ModelConfig) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let hs = Self::from_json(&text, Some(path))?;
        hs.check_for(config, Some(path))?;
        Ok(hs)
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub fn save(&self, path: &Path, note: Option<String>) -> Result<()> {
        super::files::write_atomic(path, self.to_json(note).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_bad_values() {
        let hs = HeadScales {
            num_layers: 2,
            num_heads: 3,
            values: vec![1.0, 1.5, 2.0, 1.0, 1.25, 3.0],
        };
        let back = HeadScales::from_json(&hs.to_json(None), None).unwrap();
        assert_eq!(back, hs);
        for bad in [
            "[[1.0, NaN]]",
            "{\"head_scales\": [[1.0, 0.0]]}",
            "{\"head_scales\": [[1.0, -2]]}",
            "{\"head_scales\": [[1.0], [1.0, 2.0]]}",
        ] {
            assert!(HeadScales::from_json(bad, None).is_err(), "{bad}");
        }
        let nan = HeadScales {
            num_layers: 1,
            num_heads: 2,
            values: vec![1.0, f32::NAN],
        };
        assert!(nan.validate(None).unwrap_err().to_string().contains("head 1"));
    }
}
