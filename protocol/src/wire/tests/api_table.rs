//! Tests driven by the API table: they iterate `ApiKey::ALL`, so a new row is covered without
//! editing them (and fails them until it has a sample and a round-trip strategy).

use std::collections::HashSet;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;

use super::samples;
use super::*;

#[test]
fn every_api_round_trips_through_its_number_and_numbers_are_unique() {
    let mut numbers = HashSet::new();
    for api in ApiKey::ALL {
        assert_eq!(ApiKey::from_u16(api as u16), Ok(api));
        assert!(numbers.insert(api as u16), "{api:?}: number used twice");
    }
    for v in (0..=u16::MAX).filter(|v| !numbers.contains(v)) {
        assert_eq!(ApiKey::from_u16(v), Err(ProtocolError::UnknownApi(v)));
    }
}

/// A request frame (length prefix removed) with the given header fields.
fn request_frame(api: ApiKey, version: u16, correlation_id: u32, body: &[Bytes]) -> Bytes {
    let mut v = Vec::new();
    v.extend_from_slice(&(api as u16).to_le_bytes());
    v.extend_from_slice(&version.to_le_bytes());
    v.extend_from_slice(&correlation_id.to_le_bytes());
    for c in body {
        v.extend_from_slice(c);
    }
    Bytes::from(v)
}

#[test]
fn each_api_accepts_exactly_its_declared_versions() {
    let samples = samples::requests();
    for api in ApiKey::ALL {
        let (lo, hi) = api.versions();
        assert!(lo <= hi, "{api:?}: version range {lo}..={hi} is empty");
        let sample = samples
            .iter()
            .find(|r| r.api_key() == api)
            .unwrap_or_else(|| panic!("{api:?}: no sample request"));
        let body = sample.encode_body();

        for version in [lo, hi] {
            let (_, req) = decode_request(request_frame(api, version, 3, &body)).unwrap();
            assert_eq!(req.as_ref(), Ok(sample), "{api:?} version {version}");
        }

        let mut outside = Vec::new();
        if lo > 0 {
            outside.extend([0, lo - 1]);
        }
        if hi < u16::MAX {
            outside.extend([hi + 1, u16::MAX]);
        }
        for version in outside {
            let (header, req) = decode_request(request_frame(api, version, 5, &body)).unwrap();
            assert_eq!(header.correlation_id, 5);
            let err = req.unwrap_err();
            assert_eq!(err, ProtocolError::UnsupportedVersion { api, version });
            assert_eq!(ErrorCode::from(&err), ErrorCode::UNSUPPORTED_VERSION);
        }
    }
}

/// The property tests' strategies generate every API (a new API without a strategy arm would only
/// be round-tripped by its one hand-made sample).
#[test]
fn round_trip_strategies_cover_every_api() {
    let mut runner = TestRunner::deterministic();
    let (requests, responses) = (super::request(), super::response());
    let (mut seen_requests, mut seen_responses) = (HashSet::new(), HashSet::new());
    for _ in 0..2000 {
        let req = requests.new_tree(&mut runner).unwrap().current();
        seen_requests.insert(req.api_key());
        let resp = responses.new_tree(&mut runner).unwrap().current();
        seen_responses.insert(resp.api_key());
    }
    for api in ApiKey::ALL {
        assert!(seen_requests.contains(&api), "{api:?}: no request strategy");
        assert!(
            seen_responses.contains(&api),
            "{api:?}: no response strategy"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    /// Every API's body decoders, fed arbitrary bytes, answer a value or an error (no panic).
    #[test]
    fn random_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for api in ApiKey::ALL {
            let _ = Request::decode_body(api, Bytes::from(bytes.clone()));
            let mut r = codec::Reader::new(Bytes::from(bytes.clone()));
            let _ = Response::decode_body(api, &mut r);
        }
    }
}
