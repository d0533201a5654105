//! `model_from_bytes` (config.json + model.safetensors) must return a result
//! for every input: no panic, no abort, no allocation sized by a header value.
//!
//! Input layout: a little-endian u32 `n`, then `n` bytes of config JSON
//! (clamped to what is there), then the safetensors bytes (the rest).
//! `examples/make_seeds.rs` writes inputs in this layout.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use nopescope::model::files::model_from_bytes;
use nopescope::model::ParamLayout;

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<4>() else {
        return (data, &[]);
    };
    let n = (u32::from_le_bytes(*head) as usize).min(rest.len());
    rest.split_at(n)
}

fuzz_target!(|data: &[u8]| {
    let (config, weights) = split(data);
    if let Ok((config, params)) = model_from_bytes(config, weights, Path::new("fuzz")) {
        // What a success promises: the layout of the config, every weight finite.
        assert_eq!(params.layout, ParamLayout::new(&config));
        assert_eq!(params.data.len(), params.layout.total);
        assert!(params.data.iter().all(|x| x.is_finite()));
    }
});
