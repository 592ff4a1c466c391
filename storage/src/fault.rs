//! Fault injection for the storage I/O layer (cargo feature `fault-injection`, off by default; always
//! compiled into the crate's own unit tests, which live in `fault/tests.rs`).
//!
//! Owns the registry of armed fault plans and the decision, per intercepted operation, whether it
//! runs, fails or is torn. It never performs I/O itself: the wrappers in `crate::io` (every write,
//! fsync, directory fsync, rename, file creation and length change the crate does) ask
//! [`intercept`] first and act on the answer. Without the feature those wrappers contain no call
//! here at all (zero cost).
//!
//! A test arms a [`Plan`] scoped to a path prefix (normally its own temporary log directory, or one
//! file in it), so tests running in parallel threads of one binary never see each other's faults:
//!
//! ```ignore
//! use sluice_storage::fault::{Errno, Op, Plan, Torn};
//! let armed = Plan::new(dir.path())
//!     .fail(Op::Sync, 1, Errno::Eio)                // the next file fsync fails with EIO
//!     .tear_write(2, 10, Torn::ThenError(Errno::Eio)) // the 2nd write lands its first 10 bytes only
//!     .arm();
//! // ... drive the log ...
//! assert_eq!(armed.fired(), 2);
//! drop(armed); // disarms
//! ```
//!
//! Operations are counted per kind ([`Op`]) from the moment the plan is armed, 1-based, over every
//! path under the scope; one logical write (one `pwritev` loop over a whole batch, or one chunk of a
//! zeroed range) counts once. Paths are compared component-wise and as given (no canonicalisation):
//! arm with the same path the log was opened with. Writes through the index files' memory maps are
//! not syscalls and are not intercepted; their `fsync`s are.
//!
//! Simulated power loss (`power`): [`Plan::power_loss`] makes the plan model what the disk holds
//! durably, and [`Armed::pull_plug`] rewrites the scope to it, as a machine that lost power would
//! find it; [`Armed::pull_plug_with`] also keeps a chosen subset of the name changes (creations,
//! renames, removals) no directory fsync covered, as a file system that wrote them in any order. [`Plan::crash_at`] and [`Armed::crash`] stop the "machine" at a chosen operation: from
//! there every intercepted operation under the scope fails with EIO and none becomes durable.
//!
//! ```ignore
//! let armed = Plan::new(dir.path()).power_loss().crash_at(Op::Rename, 2).arm();
//! // ... drive the log until it fails, then drop it without `close` (the process "dies") ...
//! let cut = armed.pull_plug(LastWrite::Keep(7))?; // unsynced data gone, the last write torn at 7
//! // ... reopen and check what survived ...
//! ```

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::sync::lock;

mod power;
#[cfg(test)]
mod power_model_tests;
#[cfg(test)]
mod power_swap_tests;
#[cfg(test)]
mod power_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod torn_model_tests;

pub use power::{LastWrite, Names, PowerCut, TornWrite};

/// Kinds of intercepted operations (each counted separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Opening a file with create (segment and index files, temporary files of durable writes).
    Create,
    /// A positional write (`pwritev`): a batch append, a zeroed range chunk, a durable file's body.
    Write,
    /// Changing a file's length (`ftruncate`: trims on seal and recovery, index sizing).
    SetLen,
    /// `fsync`/`fdatasync` of a file (segment, index, temporary file of a durable write).
    Sync,
    /// `fsync` of a directory (after creating, renaming or deleting files in it).
    SyncDir,
    /// `rename` (durable files over their target, compaction's cleaned files into place); the path
    /// matched against the scope is the target.
    Rename,
    /// Removing a file's name (`unlink`: compaction's marker and leftovers, deleted segments).
    Remove,
}

const OPS: usize = 7;

impl Op {
    fn index(self) -> usize {
        match self {
            Op::Create => 0,
            Op::Write => 1,
            Op::SetLen => 2,
            Op::Sync => 3,
            Op::SyncDir => 4,
            Op::Rename => 5,
            Op::Remove => 6,
        }
    }
}

/// The error an injected fault reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// `EIO`: the device failed the operation.
    Eio,
    /// `ENOSPC`: the file system is full.
    Enospc,
}

impl Errno {
    /// The raw OS error number.
    pub fn raw(self) -> i32 {
        match self {
            Errno::Eio => libc::EIO,
            Errno::Enospc => libc::ENOSPC,
        }
    }

    fn error(self) -> io::Error {
        io::Error::from_raw_os_error(self.raw())
    }
}

/// What a torn write reports after writing its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Torn {
    /// Reports this error (a write that failed part-way).
    ThenError(Errno),
    /// Reports success although only the prefix reached the file: the process believes the whole
    /// write landed. Meaningful only when followed by a simulated crash (drop the log without
    /// `close`, reopen): reading the missing bytes through the map would fault past the file end.
    ThenSuccess,
}

#[derive(Debug, Clone, Copy)]
enum Effect {
    Fail(Errno),
    Tear { keep: usize, then: Torn },
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    op: Op,
    nth: u64,
    /// Fires on the `nth` operation and every later one (a full disk stays full).
    sticky: bool,
    effect: Effect,
}

/// A set of faults to inject under one path prefix. Build it, then [`Plan::arm`] it.
#[derive(Debug, Clone)]
pub struct Plan {
    scope: PathBuf,
    rules: Vec<Rule>,
    power_loss: bool,
    crash: Option<(Op, u64)>,
}

impl Plan {
    /// An empty plan for every path under `scope` (a log directory, or a single file).
    pub fn new(scope: impl Into<PathBuf>) -> Plan {
        Plan {
            scope: scope.into(),
            rules: Vec::new(),
            power_loss: false,
            crash: None,
        }
    }

    /// Models power loss under the scope, which must be a directory: arming snapshots every file's
    /// content and every directory's listing under it as durable; from then on a successful file
    /// fsync makes that file's current content durable, a directory fsync that directory's current
    /// listing, and [`Armed::pull_plug`] puts the durable state back on disk.
    pub fn power_loss(mut self) -> Plan {
        self.power_loss = true;
        self
    }

    /// The machine stops at the `nth` operation of kind `op`: that operation and every later one
    /// under the scope, of any kind, fail with EIO and have no effect (see [`Armed::crash`]).
    pub fn crash_at(mut self, op: Op, nth: u64) -> Plan {
        self.crash = Some((op, nth));
        self
    }

    /// Fails the `nth` (1-based, counted from arming) operation of kind `op` with `errno`; the
    /// operation has no effect.
    pub fn fail(mut self, op: Op, nth: u64, errno: Errno) -> Plan {
        self.rules.push(Rule {
            op,
            nth,
            sticky: false,
            effect: Effect::Fail(errno),
        });
        self
    }

    /// Fails the `nth` operation of kind `op` and every later one with `errno`.
    pub fn fail_from(mut self, op: Op, nth: u64, errno: Errno) -> Plan {
        self.rules.push(Rule {
            op,
            nth,
            sticky: true,
            effect: Effect::Fail(errno),
        });
        self
    }

    /// Tears the `nth` write: only its first `keep` bytes reach the file (all of it if it is
    /// shorter), then it reports what `then` says.
    pub fn tear_write(mut self, nth: u64, keep: usize, then: Torn) -> Plan {
        self.rules.push(Rule {
            op: Op::Write,
            nth,
            sticky: false,
            effect: Effect::Tear { keep, then },
        });
        self
    }

    /// Starts injecting. The plan stays armed until the returned handle is dropped.
    /// With [`Plan::power_loss`], a scope that cannot be read is reported by [`Armed::pull_plug`].
    pub fn arm(self) -> Armed {
        let power = self.power_loss.then(|| power::Power::snapshot(&self.scope));
        let state = Arc::new(State {
            plan: self,
            counts: Default::default(),
            fired: AtomicU64::new(0),
            crashed: AtomicBool::new(false),
            power,
        });
        let mut plans = lock(&PLANS);
        plans.push(state.clone());
        ARMED.store(plans.len(), Ordering::SeqCst);
        Armed { state }
    }
}

/// An armed plan; dropping it disarms the plan.
#[derive(Debug)]
pub struct Armed {
    state: Arc<State>,
}

impl Armed {
    /// Operations of kind `op` seen under the scope since arming (failed and torn ones included).
    pub fn count(&self, op: Op) -> u64 {
        self.state.counts[op.index()].load(Ordering::SeqCst)
    }

    /// How many faults the plan injected so far.
    pub fn fired(&self) -> u64 {
        self.state.fired.load(Ordering::SeqCst)
    }

    /// Stops the machine now: every later operation under the scope fails with EIO and has no
    /// effect, so nothing more becomes durable.
    pub fn crash(&self) {
        self.state.crashed.store(true, Ordering::SeqCst);
    }

    /// How many name changes (file creations, renames, removals) under the scope no directory fsync
    /// covered yet: the positions [`Names::Keep`] picks from (0 the oldest). 0 without
    /// [`Plan::power_loss`].
    pub fn unsynced_names(&self) -> usize {
        self.state.power.as_ref().map_or(0, |p| p.unsynced_names())
    }

    /// Whether the machine stopped ([`Armed::crash`], or the operation [`Plan::crash_at`] names).
    pub fn crashed(&self) -> bool {
        self.state.crashed.load(Ordering::SeqCst)
    }

    /// Power loss (the plan must have [`Plan::power_loss`]): stops the machine, disarms the plan,
    /// and rewrites the scope to its durable state: every name not durably listed is removed, every
    /// durably listed name that was removed or renamed is back, and every file holds its durable
    /// content, plus what `last` says of the last write no fsync covered. Call it after the log (the
    /// "process") is gone: dropped without `close`. The model lives in this process and sees only
    /// this process's operations: a log driven by a child process is not covered.
    pub fn pull_plug(self, last: LastWrite) -> io::Result<PowerCut> {
        self.pull_plug_with(last, &Names::Lose)
    }

    /// [`Armed::pull_plug`], with the name changes no directory fsync covered surviving as `names`
    /// says (`pull_plug` loses them all): a file system may write a directory's changes to disk in
    /// any order until it is fsynced.
    pub fn pull_plug_with(self, last: LastWrite, names: &Names) -> io::Result<PowerCut> {
        self.crash();
        // Disarm first: the rewrite below goes through `std::fs`, not the seam, but a log left open
        // by mistake must not feed the model while it is being applied.
        let mut plans = lock(&PLANS);
        plans.retain(|s| !Arc::ptr_eq(s, &self.state));
        ARMED.store(plans.len(), Ordering::SeqCst);
        drop(plans);
        match &self.state.power {
            Some(p) => p.restore(last, names),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pull_plug on a plan without power_loss()",
            )),
        }
    }
}

impl Armed {
    /// Power loss seen from outside the process: stops the machine and writes the scope's durable
    /// state (as [`Armed::pull_plug`] would leave it) into `target`, a new directory outside the
    /// scope, leaving the scope as it is. For a process that cannot stop its other threads first (a
    /// broker under test): the plan stays armed and crashed, so whatever they still do fails and
    /// nothing they do reaches the image, and no fsync can succeed unseen and let them acknowledge
    /// what the image lacks. The caller exits while it still holds the handle; whoever restarts it
    /// puts `target` in the scope's place.
    pub fn pull_plug_into(&self, last: LastWrite, target: &Path) -> io::Result<PowerCut> {
        self.pull_plug_into_with(last, &Names::Lose, target)
    }

    /// [`Armed::pull_plug_into`], with the unsynced name changes surviving as `names` says. The
    /// model is left as it is, so a test can write several images of one cut, each keeping other
    /// changes.
    pub fn pull_plug_into_with(
        &self,
        last: LastWrite,
        names: &Names,
        target: &Path,
    ) -> io::Result<PowerCut> {
        self.crash();
        match &self.state.power {
            Some(p) => p.image_into(last, names, target),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "pull_plug_into on a plan without power_loss()",
            )),
        }
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let mut plans = lock(&PLANS);
        plans.retain(|s| !Arc::ptr_eq(s, &self.state));
        ARMED.store(plans.len(), Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct State {
    plan: Plan,
    counts: [AtomicU64; OPS],
    fired: AtomicU64,
    /// The machine stopped: every operation fails.
    crashed: AtomicBool,
    power: Option<power::Power>,
}

impl State {
    fn on_op(&self, info: &OpInfo<'_>) -> Option<Action> {
        let n = self.counts[info.op.index()].fetch_add(1, Ordering::SeqCst) + 1;
        if self.plan.crash == Some((info.op, n)) {
            self.crashed.store(true, Ordering::SeqCst);
        }
        if self.crashed.load(Ordering::SeqCst) {
            self.fired.fetch_add(1, Ordering::SeqCst);
            return Some(Action::Fail(Errno::Eio.error()));
        }
        let rule = self
            .plan
            .rules
            .iter()
            .find(|r| r.op == info.op && (n == r.nth || (r.sticky && n > r.nth)))?;
        self.fired.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(op = ?info.op, path = %info.path.display(), n, effect = ?rule.effect,
            "injecting an I/O fault");
        Some(match rule.effect {
            Effect::Fail(errno) => Action::Fail(errno.error()),
            Effect::Tear { keep, then } => Action::Tear {
                keep: keep.min(info.len),
                then: match then {
                    Torn::ThenError(errno) => Some(errno.error()),
                    Torn::ThenSuccess => None,
                },
            },
        })
    }
}

/// Armed plans; `ARMED` mirrors their count so an unarmed process pays one atomic load per op.
static PLANS: Mutex<Vec<Arc<State>>> = Mutex::new(Vec::new());
static ARMED: AtomicUsize = AtomicUsize::new(0);

/// One intercepted operation, as the I/O wrappers describe it.
#[derive(Debug)]
pub(crate) struct OpInfo<'a> {
    pub(crate) op: Op,
    pub(crate) path: &'a Path,
    /// The open file a write, fsync or length change acts on (`None` for the others).
    pub(crate) file: Option<&'a File>,
    /// A rename's source (`path` is its target); `None` for the others.
    pub(crate) from: Option<&'a Path>,
    /// Position of a write (0 for other operations).
    pub(crate) pos: u64,
    /// Bytes of a write (0 for other operations).
    pub(crate) len: usize,
    /// A write's bytes, back to back (empty for other operations).
    pub(crate) data: &'a [&'a [u8]],
}

/// What the I/O wrapper must do instead of the plain operation.
#[derive(Debug)]
pub(crate) enum Action {
    /// Do nothing and return this error.
    Fail(io::Error),
    /// Write only the first `keep` bytes, then return `then` (or success).
    Tear {
        keep: usize,
        then: Option<io::Error>,
    },
}

/// Tells the power-loss models that `path` was opened with create and is `file` (the open ran, so no
/// plan failed it): its name may be new, and lost with its directory's next fsync undone.
pub(crate) fn created(path: &Path, file: &File) {
    if ARMED.load(Ordering::SeqCst) == 0 {
        return;
    }
    let matching: Vec<Arc<State>> = lock(&PLANS)
        .iter()
        .filter(|s| path.starts_with(&s.plan.scope))
        .cloned()
        .collect();
    for p in matching.iter().filter_map(|s| s.power.as_ref()) {
        p.created(path, file);
    }
}

/// Asks the armed plans about one operation. `None`: run it normally.
pub(crate) fn intercept(info: OpInfo<'_>) -> Option<Action> {
    if ARMED.load(Ordering::SeqCst) == 0 {
        return None;
    }
    let matching: Vec<Arc<State>> = lock(&PLANS)
        .iter()
        .filter(|s| info.path.starts_with(&s.plan.scope))
        .cloned()
        .collect();
    // Every matching plan counts the operation; the first with a fault for it decides.
    let mut action = None;
    for s in &matching {
        let a = s.on_op(&info);
        if action.is_none() {
            action = a;
        }
    }
    // Then the power-loss models learn what reached the page cache (and, for an fsync, the disk).
    let ran = match &action {
        None => Some(info.len),
        Some(Action::Tear { keep, .. }) => Some(*keep),
        Some(Action::Fail(_)) => None,
    };
    if let Some(ran) = ran {
        for p in matching.iter().filter_map(|s| s.power.as_ref()) {
            p.observe(&info, ran);
        }
    }
    action
}
