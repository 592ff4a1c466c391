//! The test-only power-loss hook (`sluice broker --power-loss-hook`, compiled in only with the
//! cargo feature `power-loss-hook`): the broker records, through storage's fault seam, what its data
//! directory holds durably, and on SIGUSR1 "loses power": the machine stops (no operation reaches
//! the disk any more), the durable state is written to `<data dir>.power-cut`, and the process exits
//! at once with [`EXIT_CODE`], without closing anything. The test harness then puts that directory
//! in place of the data directory and restarts the broker on it, as a machine coming back would.
//!
//! It never runs in a build without the feature: the flag is refused there, so a test cannot
//! believe it cut power when it did not.

use std::path::Path;
#[cfg(feature = "power-loss-hook")]
use std::path::PathBuf;

/// The exit status after a power cut (distinct from a crash or a clean stop).
#[cfg(feature = "power-loss-hook")]
pub const EXIT_CODE: i32 = 86;

/// Where the durable image of `data_dir` is written.
#[cfg(feature = "power-loss-hook")]
pub fn image_dir(data_dir: &Path) -> PathBuf {
    let mut d = data_dir.as_os_str().to_os_string();
    d.push(".power-cut");
    d.into()
}

/// Arms the model over `data_dir` (created if missing) and starts waiting for SIGUSR1. Call it on
/// the runtime before the broker opens anything.
#[cfg(feature = "power-loss-hook")]
pub fn install(data_dir: &Path) -> Result<(), String> {
    use sluice_storage::fault::{LastWrite, Plan};
    use tokio::signal::unix::{signal, SignalKind};

    sluice_storage::create_dir_durably(data_dir)
        .map_err(|e| format!("create {}: {e}", data_dir.display()))?;
    let image = image_dir(data_dir);
    if image.exists() {
        return Err(format!(
            "{} exists: an earlier power cut was not put in place",
            image.display()
        ));
    }
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| format!("SIGUSR1: {e}"))?;
    let armed = Plan::new(data_dir).power_loss().arm();
    tokio::spawn(async move {
        usr1.recv().await;
        // Which part of the last unsynced write lands is the disk's choice: vary it per cut.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as usize);
        let last = if nanos.is_multiple_of(4) {
            LastWrite::Lose
        } else {
            LastWrite::Keep(nanos % 8192)
        };
        let code = match armed.pull_plug_into(last, &image) {
            Ok(cut) => {
                eprintln!("sluice broker: power cut ({last:?}): {cut:?}");
                EXIT_CODE
            }
            Err(e) => {
                eprintln!("sluice broker: power cut failed: {e}");
                1
            }
        };
        // Nothing may run after the cut: no destructor, no flush, no clean close.
        // SAFETY: _exit ends the process without touching any Rust state.
        unsafe { libc::_exit(code) }
    });
    Ok(())
}

/// Without the feature the hook does not exist: say so instead of running without it.
#[cfg(not(feature = "power-loss-hook"))]
pub fn install(_data_dir: &Path) -> Result<(), String> {
    Err("--power-loss-hook needs a build with the cargo feature `power-loss-hook`".into())
}
