//! The power-loss model behind [`super::Plan::power_loss`]: what the disk holds durably under a
//! scope, kept up to date from the operations the I/O seam reports, and written back over the scope
//! by [`super::Armed::pull_plug`], as a machine that lost power would find its disk.
//!
//! Files are known by inode number, so a rename carries a file's durable content with it while the
//! new name becomes durable only with an fsync of its directory. The model keeps an open descriptor
//! on every inode it has seen, so the kernel cannot hand a number it may still restore to a new file.
//! - arming: every file's content and every directory's listing under the scope are durable;
//! - a file fsync that runs: that inode's durable content becomes what the file holds when the fsync
//!   starts, read back through its descriptor (so index entries written through memory maps count;
//!   writes racing with the fsync may or may not be in it, as on a real disk);
//! - a directory fsync that runs: that directory's durable listing becomes its current listing;
//! - a write that runs is remembered (position, bytes) until its file's next fsync; the last such
//!   write of the scope may reach the disk torn ([`LastWrite`]), every other one is lost.
//!
//! - a file creation, rename or removal through the seam is remembered as a name change until an
//!   fsync of its directory covers it; when the power goes, [`Names`] says which of those reach the
//!   disk: none (what `pull_plug` does: each directory as its last fsync left it), or any chosen
//!   subset, applied in the order they ran over the fsynced listings: a file system may write a
//!   directory's unsynced changes in any order, so a later rename can survive an earlier creation.
//!   A rename survives or is lost whole (both its names).
//!
//! Changes made around the seam (a plain `fs::remove_file`, `fs::create_dir`) are never chosen: a
//! name such a call removed is still in the durable listing, one it created is lost, until a
//! directory fsync covers it. Reading the scope may fail inside an I/O call, where the model cannot
//! report it: the failure is kept and `pull_plug` returns it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{Op, OpInfo};
use crate::sync::lock;

/// What reaches the disk of the last write that no fsync covered when the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LastWrite {
    /// Nothing: it is lost like every other unsynced write.
    Lose,
    /// Its first `n` bytes (all of it if shorter), over its file's durable content; if it starts
    /// past the durable end, the lost writes before it read as zeros.
    Keep(usize),
}

/// Which name changes no directory fsync covered (creations, renames, removals through the seam)
/// reach the disk when the power goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Names {
    /// None: every directory holds the listing its last fsync saw.
    Lose,
    /// The changes at these positions among the unsynced ones, in the order they ran (0 the oldest;
    /// see [`super::Armed::unsynced_names`]), applied in that order over the fsynced listings; the
    /// others are lost.
    Keep(Vec<usize>),
}

impl Names {
    /// All `n` unsynced changes survive.
    pub fn all(n: usize) -> Names {
        Names::Keep((0..n).collect())
    }

    /// All `n` unsynced changes but the one at position `lost` survive.
    pub fn all_but(n: usize, lost: usize) -> Names {
        Names::Keep((0..n).filter(|&i| i != lost).collect())
    }
}

/// What [`super::Armed::pull_plug`] did to the scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PowerCut {
    /// Files written back with their durable content.
    pub files: usize,
    /// Names removed because no directory fsync made them durable.
    pub removed: Vec<PathBuf>,
    /// The torn last write, if part of it landed in a durably listed file.
    pub torn: Option<TornWrite>,
}

/// A write that reached the disk in part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornWrite {
    pub path: PathBuf,
    /// Its position in the file.
    pub pos: u64,
    /// Bytes of it that landed.
    pub kept: usize,
    /// Bytes it had.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

type Listing = BTreeMap<OsString, Node>;

/// A name change no directory fsync covered yet. Each end is a directory, a name in it, and what
/// the name holds after the change (`None`: removed); a rename has two ends.
#[derive(Debug)]
struct NameChange {
    ends: Vec<(PathBuf, OsString, Option<Node>)>,
}

/// A write no fsync of its file covered yet.
#[derive(Debug)]
struct Pending {
    seq: u64,
    pos: u64,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Model {
    root: PathBuf,
    /// Durable content per inode (an inode never fsynced since arming has none: empty).
    images: HashMap<u64, Vec<u8>>,
    /// Durable listing per directory (a directory never fsynced since its creation has none).
    listings: HashMap<PathBuf, Listing>,
    /// Keeps every inode seen alive, so its number is not reused while the model runs.
    held: HashMap<u64, File>,
    pending: HashMap<u64, Pending>,
    /// Name changes under the scope no fsync of their directory covered, in the order they ran.
    unsynced: Vec<NameChange>,
    seq: u64,
    error: Option<String>,
}

/// One power-loss model (one armed plan's).
#[derive(Debug)]
pub(super) struct Power {
    model: Mutex<Model>,
}

impl Power {
    /// The model of a disk whose durable state is what `root` holds now.
    pub(super) fn snapshot(root: &Path) -> Power {
        let mut m = Model {
            root: root.to_path_buf(),
            ..Model::default()
        };
        if let Err(e) = m.snapshot_dir(root) {
            m.note(format!("snapshot {}: {e}", root.display()));
        }
        Power {
            model: Mutex::new(m),
        }
    }

    /// Learns from an operation that ran: `ran` bytes of a write reached the page cache; an fsync
    /// (about to run) makes the file's or the directory's current state durable.
    pub(super) fn observe(&self, info: &OpInfo<'_>, ran: usize) {
        let mut m = lock(&self.model);
        let r = match info.op {
            Op::Write => m.on_write(info, ran),
            Op::Sync => m.on_sync(info),
            Op::SyncDir => m.listing(info.path).map(|l| {
                m.listings.insert(info.path.to_path_buf(), l);
                m.synced_dir(info.path);
            }),
            Op::Rename => match info.from {
                Some(from) => m.on_rename(from, info.path),
                None => Err(io::Error::other("the seam passed no rename source")),
            },
            Op::Remove => m.on_remove(info.path),
            // A creation is learnt once the file exists (`created`); a length change is content.
            Op::Create | Op::SetLen => Ok(()),
        };
        if let Err(e) = r {
            m.note(format!("{:?} {}: {e}", info.op, info.path.display()));
        }
    }

    /// Learns that `path` was opened with create and is `file`: maybe a new name.
    pub(super) fn created(&self, path: &Path, file: &File) {
        let mut m = lock(&self.model);
        if let Err(e) = m.on_create(path, file) {
            m.note(format!("Create {}: {e}", path.display()));
        }
    }

    /// Name changes no directory fsync covered yet.
    pub(super) fn unsynced_names(&self) -> usize {
        lock(&self.model).unsynced.len()
    }

    /// Rewrites the scope to its durable state (see [`super::Armed::pull_plug_with`]).
    pub(super) fn restore(&self, last: LastWrite, names: &Names) -> io::Result<PowerCut> {
        let m = lock(&self.model);
        if let Some(e) = &m.error {
            return Err(io::Error::other(format!("power-loss model: {e}")));
        }
        let torn = m.torn(last);
        let mut cut = PowerCut::default();
        m.restore_dir(&m.root, torn, names, &mut cut)?;
        Ok(cut)
    }

    /// Writes the scope's durable state into `target`, a directory that must not exist yet (see
    /// [`super::Armed::pull_plug_into`]). The scope itself is left alone.
    pub(super) fn image_into(
        &self,
        last: LastWrite,
        names: &Names,
        target: &Path,
    ) -> io::Result<PowerCut> {
        let m = lock(&self.model);
        if let Some(e) = &m.error {
            return Err(io::Error::other(format!("power-loss model: {e}")));
        }
        if target.starts_with(&m.root) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the power-cut image must lie outside the scope",
            ));
        }
        let torn = m.torn(last);
        let mut cut = PowerCut::default();
        fs::create_dir(target)?;
        m.image_dir(&m.root, target, torn, names, &mut cut)?;
        Ok(cut)
    }
}

impl Model {
    /// The last write no fsync covered, with how many of its bytes land (`last`).
    fn torn(&self, last: LastWrite) -> Option<(u64, &Pending, usize)> {
        match last {
            LastWrite::Lose => None,
            LastWrite::Keep(n) => self
                .pending
                .iter()
                .max_by_key(|(_, p)| p.seq)
                .map(|(&ino, p)| (ino, p, n.min(p.bytes.len()))),
        }
    }

    /// `ino`'s durable content, with the torn write over it if it belongs to that file.
    fn durable_body(
        &self,
        ino: u64,
        path: &Path,
        torn: Option<(u64, &Pending, usize)>,
        cut: &mut PowerCut,
    ) -> io::Result<Vec<u8>> {
        let mut body = self.images.get(&ino).cloned().unwrap_or_default();
        if let Some((_, p, kept)) = torn.filter(|t| t.0 == ino && t.2 > 0) {
            let pos = usize::try_from(p.pos).map_err(io::Error::other)?;
            if body.len() < pos + kept {
                body.resize(pos + kept, 0);
            }
            body[pos..pos + kept].copy_from_slice(&p.bytes[..kept]);
            cut.torn = Some(TornWrite {
                path: path.to_path_buf(),
                pos: p.pos,
                kept,
                len: p.bytes.len(),
            });
        }
        Ok(body)
    }

    /// What `dir` lists after the power cut: its fsynced listing with the unsynced changes `names`
    /// keeps applied over it, in the order they ran.
    fn durable_listing(&self, dir: &Path, names: &Names) -> Listing {
        let mut listing = self.listings.get(dir).cloned().unwrap_or_default();
        let Names::Keep(keep) = names else {
            return listing;
        };
        for (i, change) in self.unsynced.iter().enumerate() {
            if !keep.contains(&i) {
                continue;
            }
            for (_, name, node) in change.ends.iter().filter(|e| e.0 == dir) {
                match node {
                    Some(n) => listing.insert(name.clone(), *n),
                    None => listing.remove(name),
                };
            }
        }
        listing
    }

    /// Writes the durable listing of `dir` (and below) into `target`, which exists.
    fn image_dir(
        &self,
        dir: &Path,
        target: &Path,
        torn: Option<(u64, &Pending, usize)>,
        names: &Names,
        cut: &mut PowerCut,
    ) -> io::Result<()> {
        for (name, entry) in &self.durable_listing(dir, names) {
            let to = target.join(name);
            match *entry {
                Node::Dir => {
                    fs::create_dir(&to)?;
                    self.image_dir(&dir.join(name), &to, torn, names, cut)?;
                }
                Node::File(ino) => {
                    let body = self.durable_body(ino, &to, torn, cut)?;
                    fs::write(&to, &body)?;
                    cut.files += 1;
                }
            }
        }
        Ok(())
    }

    fn note(&mut self, e: String) {
        tracing::warn!(error = %e, "power-loss model cannot follow the disk");
        self.error.get_or_insert(e);
    }

    fn snapshot_dir(&mut self, dir: &Path) -> io::Result<()> {
        let listing = self.listing(dir)?;
        for (name, entry) in &listing {
            match *entry {
                Node::Dir => self.snapshot_dir(&dir.join(name))?,
                Node::File(ino) => {
                    if let Some(f) = self.held.get(&ino) {
                        let body = read_all(f)?;
                        self.images.insert(ino, body);
                    }
                }
            }
        }
        self.listings.insert(dir.to_path_buf(), listing);
        Ok(())
    }

    /// The current listing of `dir`, holding every file in it open.
    fn listing(&mut self, dir: &Path) -> io::Result<Listing> {
        let mut out = Listing::new();
        for e in fs::read_dir(dir)? {
            let e = e?;
            let kind = e.file_type()?;
            if kind.is_dir() {
                out.insert(e.file_name(), Node::Dir);
            } else if kind.is_file() {
                let ino = e.ino();
                if let Entry::Vacant(slot) = self.held.entry(ino) {
                    match File::open(e.path()) {
                        Ok(f) if f.metadata()?.ino() == ino => {
                            slot.insert(f);
                        }
                        // Renamed or removed meanwhile: the listing below is what the fsync saw.
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                        Err(err) => return Err(err),
                    }
                }
                out.insert(e.file_name(), Node::File(ino));
            }
        }
        Ok(out)
    }

    /// `file`'s inode, and a readable descriptor on it kept in `held`.
    fn hold(&mut self, info: &OpInfo<'_>) -> io::Result<u64> {
        let file = info
            .file
            .ok_or_else(|| io::Error::other("the seam passed no file"))?;
        let ino = file.metadata()?.ino();
        if let Entry::Vacant(slot) = self.held.entry(ino) {
            // The writer's descriptor may be write-only (a durable file's temporary): reopen it.
            slot.insert(File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?);
        }
        Ok(ino)
    }

    fn on_write(&mut self, info: &OpInfo<'_>, ran: usize) -> io::Result<()> {
        let ino = self.hold(info)?;
        let mut bytes = Vec::with_capacity(ran);
        for part in info.data {
            let n = part.len().min(ran - bytes.len());
            bytes.extend_from_slice(&part[..n]);
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        let seq = self.seq;
        self.pending.insert(
            ino,
            Pending {
                seq,
                pos: info.pos,
                bytes,
            },
        );
        Ok(())
    }

    fn on_sync(&mut self, info: &OpInfo<'_>) -> io::Result<()> {
        let ino = self.hold(info)?;
        let body = match self.held.get(&ino) {
            Some(f) => read_all(f)?,
            None => return Err(io::Error::other("inode not held")),
        };
        self.images.insert(ino, body);
        self.pending.remove(&ino);
        Ok(())
    }

    /// A directory fsync covered every change to `dir` so far.
    fn synced_dir(&mut self, dir: &Path) {
        for change in &mut self.unsynced {
            change.ends.retain(|e| e.0 != dir);
        }
        self.unsynced.retain(|c| !c.ends.is_empty());
    }

    fn on_create(&mut self, path: &Path, file: &File) -> io::Result<()> {
        let ino = file.metadata()?.ino();
        if let Entry::Vacant(slot) = self.held.entry(ino) {
            slot.insert(File::open(format!("/proc/self/fd/{}", file.as_raw_fd()))?);
        }
        self.change(vec![(path, Some(Node::File(ino)))])
    }

    /// Before the rename runs: `from`'s file will be named `to`.
    fn on_rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        let meta = match fs::symlink_metadata(from) {
            Ok(m) => m,
            // The rename fails: nothing changes.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            // Its listings are kept by path and would not follow it.
            return Err(io::Error::other("renaming a directory is not modelled"));
        }
        if let Entry::Vacant(slot) = self.held.entry(meta.ino()) {
            slot.insert(File::open(from)?);
        }
        // Removal first: a rename onto itself leaves the name.
        self.change(vec![(from, None), (to, Some(Node::File(meta.ino())))])
    }

    /// Before the removal runs.
    fn on_remove(&mut self, path: &Path) -> io::Result<()> {
        match fs::symlink_metadata(path) {
            Ok(_) => self.change(vec![(path, None)]),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn change(&mut self, ends: Vec<(&Path, Option<Node>)>) -> io::Result<()> {
        let mut out = Vec::with_capacity(ends.len());
        for (path, node) in ends {
            let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(io::Error::other("a name change without a directory"));
            };
            out.push((dir.to_path_buf(), name.to_os_string(), node));
        }
        self.unsynced.push(NameChange { ends: out });
        Ok(())
    }

    fn restore_dir(
        &self,
        dir: &Path,
        torn: Option<(u64, &Pending, usize)>,
        names: &Names,
        cut: &mut PowerCut,
    ) -> io::Result<()> {
        let durable = &self.durable_listing(dir, names);
        for e in fs::read_dir(dir)? {
            let e = e?;
            let is_dir = e.file_type()?.is_dir();
            let keep = match durable.get(&e.file_name()) {
                Some(Node::Dir) => is_dir,
                Some(Node::File(_)) => !is_dir,
                None => false,
            };
            if !keep {
                if is_dir {
                    fs::remove_dir_all(e.path())?;
                } else {
                    fs::remove_file(e.path())?;
                }
                cut.removed.push(e.path());
            }
        }
        for (name, entry) in durable {
            let path = dir.join(name);
            match *entry {
                Node::Dir => {
                    fs::create_dir_all(&path)?;
                    self.restore_dir(&path, torn, names, cut)?;
                }
                Node::File(ino) => {
                    let body = self.durable_body(ino, &path, torn, cut)?;
                    // A new inode: nothing the dead process left mapped sees the rewrite.
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    fs::write(&path, &body)?;
                    cut.files += 1;
                }
            }
        }
        Ok(())
    }
}

/// Everything `file` holds, read from position 0 whatever its cursor.
fn read_all(file: &File) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read_at(&mut buf, out.len() as u64) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}
