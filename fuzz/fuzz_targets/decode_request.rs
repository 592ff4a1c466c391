//! Any bytes as a request frame: decoding returns a value or an error, never panics, and a decoded
//! request re-encodes to a frame that decodes to the same request.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_protocol::wire;

fuzz_target!(|data: &[u8]| {
    if let Ok((header, Ok(req))) = wire::decode_request(Bytes::copy_from_slice(data)) {
        let mut frame = Vec::new();
        for c in wire::encode_request(&req, header.correlation_id) {
            frame.extend_from_slice(&c);
        }
        let (_, again) = wire::decode_request(Bytes::from(frame).slice(wire::LENGTH_PREFIX..)).expect("re-encoded header");
        assert_eq!(again.expect("re-encoded body"), req);
    }
});
