//! Any bytes as one input line of `omo-gateway decode -`: one JSON line out, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omo_gateway::decode_cli::decode_lines;

fuzz_target!(|data: &[u8]| {
    let line: Vec<u8> = data.iter().copied().filter(|&b| b != b'\n').collect();
    let mut out = Vec::new();
    decode_lines(&line[..], &mut out).expect("writing to memory cannot fail");
    assert!(line.is_empty() || out.iter().filter(|&&b| b == b'\n').count() == 1);
});
