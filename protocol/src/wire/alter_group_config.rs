//! AlterGroupConfig (key 16): a group's own settings, which override the coordinator broker's
//! defaults for that group: `consumer.session.timeout.ms` (the session of a member that asks for
//! none; still within the broker's bounds) and `consumer.heartbeat.interval.ms` (Kafka's KIP-848
//! group configs). An empty value goes back to the broker's default. Kept in the group's record,
//! so they survive failover; the group is created if it does not exist.
//!
//! ```text
//! request:  string group, [string key, string value]
//! response: u16 error, string message
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_configs, put_configs};
use super::table::Body;
use super::ProtocolError;

/// Versions of AlterGroupConfig this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// The group setting for a member's session when it asks for none.
pub const GROUP_SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
/// The group setting for how often members heartbeat.
pub const GROUP_HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlterGroupConfigRequest {
    pub group: String,
    /// (key, value); an empty value resets the key to the broker's default.
    pub configs: Vec<(String, String)>,
}

impl Body for AlterGroupConfigRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.group);
        put_configs(w, &self.configs);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AlterGroupConfigRequest {
            group: r.string("group id")?,
            configs: get_configs(r)?,
        })
    }
}
