//! ApiVersions (key 0): which APIs, and which versions of each, the answering broker speaks.
//! Brokers also send it to every peer broker every 200 ms, on the peer connection, as a liveness
//! ping.
//!
//! ```text
//! request:  (empty)
//! response: [u16 api, u16 min, u16 max]
//! ```
//!
//! The request has no body and so no type: it is the unit variant `Request::ApiVersions`.

use super::codec::{Reader, Writer};
use super::table::Body;
use super::ProtocolError;

/// Versions of ApiVersions this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// Every API the broker speaks, as `(api key, lowest version, highest version)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub apis: Vec<(u16, u16, u16)>,
}

impl Body for ApiVersionsResponse {
    fn encode(&self, w: &mut Writer) {
        w.count(self.apis.len());
        for (k, lo, hi) in &self.apis {
            w.u16(*k);
            w.u16(*lo);
            w.u16(*hi);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ApiVersionsResponse {
            apis: r.array(6, "apis", |r| {
                Ok((r.u16("api")?, r.u16("min")?, r.u16("max")?))
            })?,
        })
    }
}
