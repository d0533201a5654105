//! `HeadScales::from_json` must return a result for every input and, on
//! success, hold a consistent (layers x heads) table of valid scales.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nopescope::model::HeadScales;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(hs) = HeadScales::from_json(text, None) {
        assert_eq!(hs.values.len(), hs.num_layers * hs.num_heads);
        hs.validate(None).expect("from_json returned invalid scales");
        let back = HeadScales::from_json(&hs.to_json(None), None).expect("round trip");
        assert_eq!(back, hs);
    }
});
