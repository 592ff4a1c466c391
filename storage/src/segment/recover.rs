//! Recovery of one segment file that may be torn or corrupt (an unclean stop): [`recover`] checks
//! every batch from position 0 (both CRCs, offsets never going backwards), stops at the first bad or
//! torn one and cuts the file there. It never trusts an index (the caller rebuilds them) and never
//! serves what it cut; what it cut is reported to the caller, which reports it to the log's owner.

use std::fs::File;
use std::path::Path;

use sluice_protocol::batch::{self, BatchError, BatchHeader};

use super::{all_zero, map};
use crate::error::{IoContext, Result};
use crate::io;

/// What recovering a segment file kept and cut.
#[derive(Debug)]
pub(super) struct Recovered {
    /// Bytes of whole, CRC-checked batches from position 0; the file now ends here.
    pub(super) valid_len: u64,
    /// Where the scan stopped and why, if it stopped for a reason other than reaching the zeroed
    /// (never written, or truncated) end of a sealed segment.
    pub(super) truncated: Option<(u64, BatchError)>,
    /// Bytes removed past `valid_len` because of `truncated` (0 if only a zeroed suffix was cut).
    pub(super) dropped_bytes: u64,
}

/// Scans the `file_len` bytes of `file` (the segment at `path` starting at `base_offset`) and cuts
/// the file after its last good batch. `writable`: the segment will be the active one (any stop is
/// then reported, even at zeros: a machine crash can leave a zero-filled tail).
pub(super) fn recover(
    file: &File,
    path: &Path,
    base_offset: u64,
    file_len: u64,
    writable: bool,
) -> Result<Recovered> {
    // Scan with a temporary map: the file is shrunk below, and no map may outlive that.
    let scan_map = map(file, file_len, path)?;
    let scan = scan(&scan_map, base_offset, true);
    let mut truncated = None;
    if let Some(err) = scan.error {
        // Zeros up to the end of a sealed segment are the zeroed suffix of a truncation (kept while
        // readers may map it): its end, not damage. Zeros followed by data are a hole (an unsynced
        // segment after a machine crash): everything after is cut.
        let zero_tail =
            err.1 == BatchError::Empty && all_zero(&scan_map[scan.valid_len as usize..]);
        if !zero_tail || writable {
            truncated = Some(err);
        }
    }
    drop(scan_map);
    let valid_len = scan.valid_len;
    let mut dropped_bytes = 0;
    if valid_len < file_len {
        // Cut the tail off, so no stale batch past the valid end can be read back by a later
        // recovery once new appends leave a gap before it.
        io::set_len(file, path, valid_len).ctx("truncate segment", path)?;
        if truncated.is_some() {
            dropped_bytes = file_len - valid_len;
        }
    }
    Ok(Recovered {
        valid_len,
        truncated,
        dropped_bytes,
    })
}

/// Result of a recovery scan over a mapped log file.
struct Scan {
    valid_len: u64,
    error: Option<(u64, BatchError)>,
}

/// Walks batches from the start, checking both CRCs and that offsets never go backwards, and stops at
/// the first batch that fails (a zeroed header means the end of written data).
fn scan(data: &[u8], base_offset: u64, check_crc: bool) -> Scan {
    let mut pos = 0usize;
    let mut expected = base_offset;
    while pos < data.len() {
        let result = if check_crc {
            batch::check(&data[pos..])
        } else {
            BatchHeader::decode(&data[pos..])
        };
        match result {
            Ok(h) if h.base_offset >= expected && pos + h.length as usize <= data.len() => {
                expected = h.next_offset();
                pos += h.length as usize;
            }
            Ok(h) if h.base_offset < expected => {
                return Scan {
                    valid_len: pos as u64,
                    error: Some((
                        pos as u64,
                        BatchError::MalformedRecord {
                            index: 0,
                            reason: "batch offsets go backwards",
                        },
                    )),
                };
            }
            Ok(h) => {
                return Scan {
                    valid_len: pos as u64,
                    error: Some((
                        pos as u64,
                        BatchError::Truncated {
                            needed: h.length as usize,
                            available: data.len() - pos,
                        },
                    )),
                };
            }
            Err(e) => {
                return Scan {
                    valid_len: pos as u64,
                    error: Some((pos as u64, e)),
                };
            }
        }
    }
    Scan {
        valid_len: pos as u64,
        error: None,
    }
}
