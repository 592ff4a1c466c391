//! `raft.meta`: a group's vote and purge point, the only raft state that is not in the segment log.
//!
//! Layout (little-endian, 48 bytes): `b"SLRM"` | u8 version (1) | u8 flags (bit 0: vote present,
//! bit 1: vote committed, bit 2: purged present) | u16 zero | u64 vote term | u64 voted-for node |
//! u64 purged term | u64 purged index | u32 zero | u32 CRC-32 of the 44 bytes before it.
//!
//! Saved by writing a temporary file, fsyncing it, renaming it over the old one and fsyncing the
//! directory: a crash leaves the old or the new file whole, and `save` returns only once the new one is
//! durable (raft must never vote twice in a term or forget a purge it acted on).

use std::path::{Path, PathBuf};

use openraft::vote::RaftLeaderId;

use super::{log_id, term_of, LogId, Vote};

const MAGIC: &[u8; 4] = b"SLRM";
const LEN: usize = 48;
const FLAG_VOTE: u8 = 1;
const FLAG_COMMITTED: u8 = 2;
const FLAG_PURGED: u8 = 4;

/// The durable part of a group's raft state besides its log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftMeta {
    pub vote: Option<Vote>,
    pub purged: Option<LogId>,
}

impl RaftMeta {
    pub fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = 1;
        let mut flags = 0;
        if let Some(v) = &self.vote {
            flags |= FLAG_VOTE;
            if v.committed {
                flags |= FLAG_COMMITTED;
            }
            b[8..16].copy_from_slice(&v.leader_id.term.to_le_bytes());
            b[16..24].copy_from_slice(&v.leader_id.voted_for.to_le_bytes());
        }
        if let Some(p) = &self.purged {
            flags |= FLAG_PURGED;
            b[24..32].copy_from_slice(&term_of(p).to_le_bytes());
            b[32..40].copy_from_slice(&p.index.to_le_bytes());
        }
        b[5] = flags;
        let crc = crc32fast::hash(&b[..44]);
        b[44..48].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<RaftMeta, String> {
        if b.len() != LEN || &b[..4] != MAGIC {
            return Err(format!("not a raft meta file ({} bytes)", b.len()));
        }
        if b[4] != 1 {
            return Err(format!("unsupported raft meta version {}", b[4]));
        }
        let crc = u32::from_le_bytes([b[44], b[45], b[46], b[47]]);
        if crc != crc32fast::hash(&b[..44]) {
            return Err("raft meta file CRC mismatch".into());
        }
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let flags = b[5];
        let vote = (flags & FLAG_VOTE != 0).then(|| {
            let leader = openraft::impls::leader_id_std::LeaderId::new(u64_at(8), u64_at(16));
            openraft::impls::Vote {
                leader_id: leader,
                committed: flags & FLAG_COMMITTED != 0,
            }
        });
        let purged = (flags & FLAG_PURGED != 0).then(|| log_id(u64_at(24), u64_at(32)));
        Ok(RaftMeta { vote, purged })
    }
}

/// The file name of a group's vote and purge point.
const META_FILE: &str = "raft.meta";

/// The meta file of one group's directory.
#[derive(Debug)]
pub struct MetaFile {
    path: PathBuf,
    dir: PathBuf,
}

impl MetaFile {
    pub fn new(dir: &Path) -> MetaFile {
        MetaFile {
            path: dir.join(META_FILE),
            dir: dir.to_path_buf(),
        }
    }

    /// The saved state; an absent file is a group that never voted or purged.
    pub fn load(&self) -> std::io::Result<RaftMeta> {
        match std::fs::read(&self.path) {
            Ok(b) => RaftMeta::decode(&b)
                .map_err(|e| super::io_error(format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(RaftMeta::default()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the saved state durably (see the module docs).
    pub fn save(&self, meta: &RaftMeta) -> std::io::Result<()> {
        sluice_storage::write_file_durably(&self.dir, META_FILE, &meta.encode())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn meta_round_trips_and_detects_any_flipped_bit() {
        let dir = tempfile::tempdir().unwrap();
        let f = MetaFile::new(dir.path());
        assert_eq!(f.load().unwrap(), RaftMeta::default());
        let meta = RaftMeta {
            vote: Some(openraft::impls::Vote {
                leader_id: openraft::impls::leader_id_std::LeaderId::new(9, 2),
                committed: true,
            }),
            purged: Some(log_id(4, 1234)),
        };
        f.save(&meta).unwrap();
        assert_eq!(f.load().unwrap(), meta);
        let bytes = meta.encode();
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes;
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(RaftMeta::decode(&b).is_err(), "bit {bit} flip not detected");
        }
    }
}
