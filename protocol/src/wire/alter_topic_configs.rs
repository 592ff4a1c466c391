//! AlterTopicConfigs (key 29): changes a live topic's settings. `set` keys take the values given,
//! `delete` keys go back to their defaults; the broker checks the result whole (as on create) and
//! refuses keys that cannot change on a live topic. The answer carries the topic's configs after
//! the change (every key), once the answering broker has applied it. The configs travel as
//! strings; this module never validates them.
//!
//! ```text
//! request:  string name, [string key, string value] set, [string key] delete
//! response: u16 error, string message, [string key, string value] configs (empty on error)
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_configs, get_strings, put_configs, put_strings};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of AlterTopicConfigs this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterTopicConfigsRequest {
    pub name: String,
    /// (key, value) pairs to set.
    pub set: Vec<(String, String)>,
    /// Keys to put back to their defaults.
    pub delete: Vec<String>,
}

impl Body for AlterTopicConfigsRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
        put_configs(w, &self.set);
        put_strings(w, &self.delete);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AlterTopicConfigsRequest {
            name: r.string("topic name")?,
            set: get_configs(r)?,
            delete: get_strings(r, "config key")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterTopicConfigsResponse {
    pub error: ErrorCode,
    pub message: String,
    /// The topic's configs after the change.
    pub configs: Vec<(String, String)>,
}

impl Body for AlterTopicConfigsResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        put_configs(w, &self.configs);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AlterTopicConfigsResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            configs: get_configs(r)?,
        })
    }
}
