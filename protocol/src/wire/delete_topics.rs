//! DeleteTopics (key 3): deletes the named topics.
//!
//! ```text
//! request:  [string name]
//! response: [string name, u16 error, string message]   (TopicResults, shared with CreateTopics)
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_strings, put_strings};
use super::table::Body;
use super::ProtocolError;

/// Versions of DeleteTopics this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteTopicsRequest {
    pub names: Vec<String>,
}

impl Body for DeleteTopicsRequest {
    fn encode(&self, w: &mut Writer) {
        put_strings(w, &self.names);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DeleteTopicsRequest {
            names: get_strings(r, "topic name")?,
        })
    }
}
