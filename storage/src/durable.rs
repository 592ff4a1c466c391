//! Durable small files and directories: [`write_file_durably`] replaces `dir/name` so that after a
//! crash at any moment the file holds either its old content or the new one, whole, and the new one
//! is durable when the call returns. Used by the checkpoint and compaction's swap marker (and by the
//! broker for its own small state files). [`create_dir_durably`] creates a directory whose name
//! survives power loss (a log's directory, a topic's).
//!
//! It never reads or interprets the files, and never retries: any failed step is returned as is (a
//! failed fsync leaves the page cache in an unknown state). Every step goes through the `io` seam,
//! so fault injection reaches it.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

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

/// Creates `dir` and its missing ancestors so that every name on the way is durable when the call
/// returns: each directory's parent is fsynced after the directory is made (a new file fsynced
/// inside a directory whose own entry was never fsynced is lost with it on power loss). The parent
/// of `dir` is fsynced even when `dir` already exists: an earlier call may have failed between the
/// creation and that fsync.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    if missing.is_empty() {
        missing.push(dir.to_path_buf());
    }
    // Top-down, so a crash part-way leaves a durable prefix of the chain.
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir_io(parent)?;
        }
    }
    // A file (or anything else) already at `dir` is what the disk holds, not a broken invariant.
    if !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        ));
    }
    Ok(())
}
