//! ListOperators (key 25): every window operator of the cluster, from the answering broker's copy
//! of the metadata (every broker has one).
//!
//! ```text
//! request:  (no body)
//! response: u16 error, string message,
//!           [string name, string source topic, string sink topic, string window, bool paused]
//! ```

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Versions of ListOperators this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListOperatorsResponse {
    pub error: ErrorCode,
    pub message: String,
    pub operators: Vec<OperatorListing>,
}

/// One operator in a [`ListOperatorsResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorListing {
    pub name: String,
    pub source: String,
    pub sink: String,
    /// The window as the CLI spells it (`tumbling:10s`).
    pub window: String,
    pub paused: bool,
}

impl Body for ListOperatorsResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        w.count(self.operators.len());
        for o in &self.operators {
            w.string(&o.name);
            w.string(&o.source);
            w.string(&o.sink);
            w.string(&o.window);
            w.bool(o.paused);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(ListOperatorsResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            operators: r.array(9, "operators", |r| {
                Ok(OperatorListing {
                    name: r.string("operator name")?,
                    source: r.string("source topic")?,
                    sink: r.string("sink topic")?,
                    window: r.string("window")?,
                    paused: r.bool("paused")?,
                })
            })?,
        })
    }
}
