//! Where the consumer is in each assigned partition: the assignment, the position (the offset of
//! the next record to return) and last reported high watermark of each partition, `seek`, the
//! resets that give a partition without a position one (`auto_offset_reset`), and what an
//! `OFFSET_OUT_OF_RANGE` answer does to a position.
//!
//! Offsets other than explicit ones (earliest, latest, a timestamp) are resolved on the partition's
//! leader with ListOffsets. This module never fetches records and never decodes: the fetcher reads
//! positions from here ([`Positions::targets`]) and, once a round's answers all decoded, moves them
//! ([`Positions::advance`]).

use std::sync::Arc;

use sluice_protocol::wire::{ErrorCode, EARLIEST, LATEST};
use tracing::{debug, warn};

use crate::client::Client;
use crate::error::{ClientError, Result};

/// Where a partition without a position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// At the first retained record.
    #[default]
    Earliest,
    /// At the end: only records produced from now on.
    Latest,
    /// Nowhere: `poll` fails until the partition is [`Consumer::seek`](super::Consumer::seek)ed.
    None,
}

/// Where [`Consumer::seek`](super::Consumer::seek) moves a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    /// An explicit offset.
    Offset(u64),
    /// The first retained record.
    Earliest,
    /// The end of the log (the next offset to be written).
    Latest,
    /// The first record with a timestamp at or after this one (ms), or the end if there is none.
    Timestamp(i64),
}

#[derive(Debug)]
pub(super) struct Assigned {
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) position: Option<u64>,
    high_watermark: Option<u64>,
}

/// An assigned partition at the position a fetch round asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) topic: Arc<str>,
    pub(super) partition: u32,
    pub(super) position: Option<u64>,
}

/// The assigned partitions, in assignment order, each with its position. Indices into it (as the
/// fetcher keeps them for a round) stay valid until the assignment changes.
#[derive(Debug, Default)]
pub(super) struct Positions {
    assigned: Vec<Assigned>,
}

impl Positions {
    /// Replaces the assignment with `partitions`. Partitions that stay assigned keep their position;
    /// new ones have none.
    pub(super) fn assign<T: AsRef<str>>(&mut self, partitions: &[(T, u32)]) {
        let mut next: Vec<Assigned> = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let topic = topic.as_ref();
            if next
                .iter()
                .any(|a| &*a.topic == topic && a.partition == *partition)
            {
                continue;
            }
            let kept = self
                .assigned
                .iter()
                .position(|a| &*a.topic == topic && a.partition == *partition)
                .map(|i| self.assigned.swap_remove(i));
            next.push(kept.unwrap_or_else(|| Assigned {
                topic: Arc::from(topic),
                partition: *partition,
                position: None,
                high_watermark: None,
            }));
        }
        self.assigned = next;
    }

    /// The assigned partitions.
    pub(super) fn assignment(&self) -> Vec<(String, u32)> {
        self.assigned
            .iter()
            .map(|a| (a.topic.to_string(), a.partition))
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.assigned.is_empty()
    }

    /// The assigned partition at index `i`.
    pub(super) fn get(&self, i: usize) -> &Assigned {
        &self.assigned[i]
    }

    /// The position of an assigned partition, if known yet.
    pub(super) fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition).and_then(|a| a.position)
    }

    /// The high watermark the last fetch reported for an assigned partition.
    pub(super) fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition).and_then(|a| a.high_watermark)
    }

    fn find(&self, topic: &str, partition: u32) -> Option<&Assigned> {
        self.assigned
            .iter()
            .find(|a| &*a.topic == topic && a.partition == partition)
    }

    /// Every assigned partition at its current position, in assignment order.
    pub(super) fn targets(&self) -> Vec<Target> {
        self.assigned
            .iter()
            .map(|a| Target {
                topic: a.topic.clone(),
                partition: a.partition,
                position: a.position,
            })
            .collect()
    }

    /// Moves the position of an assigned partition. Earliest, latest and timestamps are resolved on
    /// the partition's leader (ListOffsets); a timestamp after every record resolves to the end.
    pub(super) async fn seek(
        &mut self,
        client: &Client,
        topic: &str,
        partition: u32,
        to: SeekTo,
    ) -> Result<()> {
        let Some(i) = self
            .assigned
            .iter()
            .position(|a| &*a.topic == topic && a.partition == partition)
        else {
            return Err(ClientError::InvalidArgument(format!(
                "{topic}/{partition} is not assigned"
            )));
        };
        let offset = match to {
            SeekTo::Offset(o) => o,
            SeekTo::Earliest => resolve(client, topic, partition, EARLIEST).await?,
            SeekTo::Latest => resolve(client, topic, partition, LATEST).await?,
            SeekTo::Timestamp(ts) => resolve(client, topic, partition, ts).await?,
        };
        debug!(topic, partition, offset, "seek");
        self.assigned[i].position = Some(offset);
        Ok(())
    }

    /// Sets the position of the partition at index `i` directly.
    #[cfg(test)]
    pub(super) fn set_position(&mut self, i: usize, offset: u64) {
        self.assigned[i].position = Some(offset);
    }

    /// Moves partitions past what a fetch round returned: `(index, next position, high watermark
    /// if the answer reported one)`.
    pub(super) fn advance(&mut self, updates: Vec<(usize, u64, Option<u64>)>) {
        for (i, position, hw) in updates {
            let a = &mut self.assigned[i];
            a.position = Some(position);
            if hw.is_some() {
                a.high_watermark = hw;
            }
        }
    }

    /// What an `OFFSET_OUT_OF_RANGE` answer (`code`) for the partition at index `i` does: an error
    /// under [`OffsetReset::None`]; otherwise the partition is to be [`reset`](Self::reset).
    pub(super) fn out_of_range(
        &self,
        i: usize,
        code: ErrorCode,
        policy: OffsetReset,
    ) -> Result<()> {
        let a = &self.assigned[i];
        if policy == OffsetReset::None {
            return Err(ClientError::broker(
                code,
                format!(
                    "position {:?} of {}/{} is out of range",
                    a.position, a.topic, a.partition
                ),
            ));
        }
        warn!(topic = %a.topic, partition = a.partition, position = ?a.position,
            "position out of range; resetting");
        Ok(())
    }

    /// Forgets the position of the partition at index `i`; the next round resolves it per
    /// `auto_offset_reset`.
    pub(super) fn reset(&mut self, i: usize) {
        self.assigned[i].position = None;
    }

    /// Gives every partition without a position one, per `policy`.
    pub(super) async fn resolve_missing(
        &mut self,
        client: &Client,
        policy: OffsetReset,
    ) -> Result<()> {
        for i in 0..self.assigned.len() {
            if self.assigned[i].position.is_some() {
                continue;
            }
            let (topic, partition) = (self.assigned[i].topic.clone(), self.assigned[i].partition);
            let spec = match policy {
                OffsetReset::Earliest => EARLIEST,
                OffsetReset::Latest => LATEST,
                OffsetReset::None => {
                    return Err(ClientError::InvalidArgument(format!(
                        "{topic}/{partition} has no position; seek first"
                    )))
                }
            };
            let offset = resolve(client, &topic, partition, spec).await?;
            debug!(topic = %topic, partition, offset, "position reset");
            self.assigned[i].position = Some(offset);
        }
        Ok(())
    }
}

/// An offset spec resolved on the leader; a timestamp without records at or after it resolves to
/// the end of the log.
async fn resolve(client: &Client, topic: &str, partition: u32, spec: i64) -> Result<u64> {
    let o = client.list_offset(topic, partition, spec).await?;
    if let Ok(o) = u64::try_from(o) {
        return Ok(o);
    }
    if spec != LATEST {
        let end = client.list_offset(topic, partition, LATEST).await?;
        if let Ok(end) = u64::try_from(end) {
            return Ok(end);
        }
    }
    Err(ClientError::broker(
        ErrorCode::OFFSET_OUT_OF_RANGE,
        format!("no offset for {topic}/{partition} at spec {spec}"),
    ))
}
