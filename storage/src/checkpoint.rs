//! The recovery checkpoint: one small file per partition saying how far the log is known to be durable
//! and whether the last shutdown was clean.
//!
//! Layout (44 bytes, little-endian): magic `SLCK`, version `1` (u8), clean flag (u8), two reserved bytes,
//! `recovery_base` (u64: every segment below this base was fsynced and is trusted without a scan),
//! `active_base`, `active_len`, `next_offset` (u64 each: the state a clean shutdown left), CRC-32 of the
//! preceding 40 bytes. Written with [`crate::write_file_durably`] (`checkpoint.tmp`, fsync, rename over
//! `checkpoint`, directory fsync).

use std::fs;
use std::path::Path;

use crate::durable::write_file_durably;
use crate::error::{IoContext, Result};

const MAGIC: &[u8; 4] = b"SLCK";
const VERSION: u8 = 1;
const LEN: usize = 44;
pub(crate) const FILE_NAME: &str = "checkpoint";

/// What the checkpoint file records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub(crate) clean: bool,
    pub(crate) recovery_base: u64,
    pub(crate) active_base: u64,
    pub(crate) active_len: u64,
    pub(crate) next_offset: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = VERSION;
        b[5] = u8::from(self.clean);
        b[8..16].copy_from_slice(&self.recovery_base.to_le_bytes());
        b[16..24].copy_from_slice(&self.active_base.to_le_bytes());
        b[24..32].copy_from_slice(&self.active_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.next_offset.to_le_bytes());
        let crc = crc32fast::hash(&b[..40]);
        b[40..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != LEN || &b[..4] != MAGIC || b[4] != VERSION || b[5] > 1 {
            return None;
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&b[40..]);
        if u32::from_le_bytes(crc) != crc32fast::hash(&b[..40]) {
            return None;
        }
        let u = |at: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[at..at + 8]);
            u64::from_le_bytes(x)
        };
        Some(Checkpoint {
            clean: b[5] == 1,
            recovery_base: u(8),
            active_base: u(16),
            active_len: u(24),
            next_offset: u(32),
        })
    }

    /// Reads the checkpoint; a missing or damaged file reads as `None` (recover everything).
    pub(crate) fn read(dir: &Path) -> Option<Checkpoint> {
        let path = dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => {
                let cp = Checkpoint::decode(&bytes);
                if cp.is_none() {
                    tracing::warn!(path = %path.display(), "checkpoint is damaged; recovering the whole log");
                }
                cp
            }
            Err(_) => None,
        }
    }

    /// Replaces the checkpoint durably (a crash leaves the old or the new one, whole).
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        write_file_durably(dir, FILE_NAME, &self.encode())
            .ctx("write checkpoint", &dir.join(FILE_NAME))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let cp = Checkpoint {
            clean: true,
            recovery_base: 5,
            active_base: 100,
            active_len: 4096,
            next_offset: 123,
        };
        let b = cp.encode();
        assert_eq!(Checkpoint::decode(&b), Some(cp));
        for i in 0..LEN {
            let mut d = b;
            d[i] ^= 0x10;
            assert_eq!(Checkpoint::decode(&d), None, "byte {i}");
        }
    }
}
