//! Any bytes as the app's consent call: a consent change or a 4xx naming the field, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omo_cloud::http::app::parse_consent;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = parse_consent(data) {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
