//! Any bytes as a LINE webhook body that passed its signature check: events or a 4xx naming
//! the field, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omo_cloud::config::Ingest;
use omo_cloud::http::line::parse_webhook;
use omo_device_config::Timestamp;

fuzz_target!(|data: &[u8]| {
    let now = Timestamp::from_millis(1_790_000_000_000).unwrap();
    if let Err(e) = parse_webhook(data, now, &Ingest::default()) {
        assert!(e.status.is_client_error(), "{e:?}");
    }
});
