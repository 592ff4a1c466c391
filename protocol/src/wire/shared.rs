//! Body types and helpers several APIs share: the per-topic outcome of create and delete
//! ([`TopicResults`]), the outcome of an administrative request ([`AdminResult`]), and the string
//! list and topic config encodings. It owns no API of its own: each is used from the API modules.

use super::codec::{Reader, Writer};
use super::table::Body;
use super::{ErrorCode, ProtocolError};

/// Per-topic outcome of create and delete.
///
/// ```text
/// [string name, u16 error, string message]
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResults {
    pub results: Vec<TopicResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicResult {
    pub name: String,
    pub error: ErrorCode,
    pub message: String,
}

impl Body for TopicResults {
    fn encode(&self, w: &mut Writer) {
        w.count(self.results.len());
        for r in &self.results {
            w.string(&r.name);
            w.u16(r.error.0);
            w.string(&r.message);
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(TopicResults {
            results: r.array(6, "results", |r| {
                Ok(TopicResult {
                    name: r.string("topic name")?,
                    error: ErrorCode(r.u16("error")?),
                    message: r.string("message")?,
                })
            })?,
        })
    }
}

/// The outcome of an administrative request.
///
/// ```text
/// u16 error, string message
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResult {
    pub error: ErrorCode,
    pub message: String,
}

impl Body for AdminResult {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(AdminResult {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
        })
    }
}

/// Topic configs: `[string key, string value]`.
pub(super) fn put_configs(w: &mut Writer, configs: &[(String, String)]) {
    w.count(configs.len());
    for (k, v) in configs {
        w.string(k);
        w.string(v);
    }
}

pub(super) fn get_configs(r: &mut Reader) -> Result<Vec<(String, String)>, ProtocolError> {
    r.array(4, "configs", |r| {
        Ok((r.string("config key")?, r.string("config value")?))
    })
}

/// A list of strings: `[string]`.
pub(super) fn put_strings(w: &mut Writer, v: &[String]) {
    w.count(v.len());
    for s in v {
        w.string(s);
    }
}

pub(super) fn get_strings(
    r: &mut Reader,
    what: &'static str,
) -> Result<Vec<String>, ProtocolError> {
    r.array(2, what, |r| r.string(what))
}

/// Partitions of one topic, as group requests list them.
///
/// ```text
/// string topic, [u32 partition]
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicPartitions {
    pub topic: String,
    pub partitions: Vec<u32>,
}

impl TopicPartitions {
    /// Groups `(topic, partition)` pairs by topic, keeping their order (sorted pairs give one
    /// entry per topic).
    pub fn group<'a>(pairs: impl IntoIterator<Item = &'a (String, u32)>) -> Vec<TopicPartitions> {
        let mut out: Vec<TopicPartitions> = Vec::new();
        for (t, p) in pairs {
            match out.last_mut() {
                Some(last) if &last.topic == t => last.partitions.push(*p),
                _ => out.push(TopicPartitions {
                    topic: t.clone(),
                    partitions: vec![*p],
                }),
            }
        }
        out
    }

    /// Every `(topic, partition)` pair of `v`, as a set.
    pub fn flatten(v: &[TopicPartitions]) -> std::collections::BTreeSet<(String, u32)> {
        v.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
            .collect()
    }
}

/// `[string topic, [u32 partition]]`.
pub(super) fn put_topic_partitions(w: &mut Writer, v: &[TopicPartitions]) {
    w.count(v.len());
    for t in v {
        w.string(&t.topic);
        w.count(t.partitions.len());
        for p in &t.partitions {
            w.u32(*p);
        }
    }
}

pub(super) fn get_topic_partitions(
    r: &mut Reader,
    what: &'static str,
) -> Result<Vec<TopicPartitions>, ProtocolError> {
    r.array(6, what, |r| {
        Ok(TopicPartitions {
            topic: r.string("topic name")?,
            partitions: r.array(4, "partitions", |r| r.u32("partition"))?,
        })
    })
}
