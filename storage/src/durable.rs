//! Durable small files: [`write_file_durably`] replaces `dir/name` so that after a crash at any
//! moment the file holds either its old content or the new one, whole, and the new one is durable
//! when the call returns. Used by the checkpoint and compaction's swap marker (and by the broker for
//! its own small state files).
//!
//! It never reads or interprets the files, and never retries: any failed step is returned as is (a
//! failed fsync leaves the page cache in an unknown state). Every step goes through the `io` seam,
//! so fault injection reaches it.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

use crate::io::{create, rename, sync_all, sync_dir_io, write_all_at};

/// Writes `body` to `dir/name` durably: writes `dir/name.tmp` (created or truncated), fsyncs it,
/// renames it over `dir/name` and fsyncs `dir`. If any step fails, `dir/name` is untouched or
/// already whole with the new content (when only the final directory fsync failed: then the rename
/// itself may not survive a machine crash) and the error is returned; a `name.tmp` may be left
/// behind, which the next call overwrites.
pub fn write_file_durably(dir: &Path, name: &str, body: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let f = create(
        &tmp,
        OpenOptions::new().write(true).create(true).truncate(true),
    )?;
    write_all_at(&f, &tmp, &[body], 0)?;
    sync_all(&f, &tmp)?;
    drop(f);
    rename(&tmp, &dir.join(name))?;
    sync_dir_io(dir)
}
