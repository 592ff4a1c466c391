//! Any bytes as a response frame to every API: decoding never panics.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::wire::{self, ApiKey};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    for api in ApiKey::ALL {
        let _ = wire::decode_response(api, frame.clone());
    }
});
