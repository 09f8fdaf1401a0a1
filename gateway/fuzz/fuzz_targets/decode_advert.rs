//! Any bytes as one advertisement's AD structures: the parser and every frame decoder must
//! return a frame list or an error with an offset inside the input, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omo_gateway::frames::{decode, encode};

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(frames) => {
            for f in &frames {
                let _ = f.to_json();
                let _ = f.beacon_id();
                let _ = f.measured_power_1m();
            }
            // What decodes re-encodes to something that decodes to the same frames.
            assert_eq!(decode(&encode(&frames)).ok(), Some(frames));
        }
        Err(e) => assert!(e.offset() <= data.len().max(omo_gateway::ad::MAX_AD_BYTES)),
    }
});
