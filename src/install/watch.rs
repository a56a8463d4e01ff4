//! The installer's event loop: one `poll` over inotify (the configuration, plugin and service
//! account directories) and a signalfd (SIGTERM, SIGINT). No listener: readiness is an exec
//! probe (`ready.rs`), so no client can delay the loop, and a signal is handled within a
//! second whatever happens on the network.
//!
//! A change in a watched directory schedules a pass once the writer's burst has settled
//! (`QUIET`), and a pass runs every second anyway (an event missed is a second late, not
//! lost). Our own temporary files are not events. A pass whose write failed is not retried
//! before a second has passed, however many events arrive (a full disk makes no busy loop),
//! and each state is logged once, when it changes.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::error::InstallError;
use super::installer::{Installer, State};
use crate::logging;
use crate::profile::istio::config::EnvSource;

/// How long a directory must be quiet before a pass reads it.
const QUIET: Duration = Duration::from_millis(20);
/// How often files we just replaced are looked at for a write that reached them late.
const LOOK: Duration = Duration::from_millis(20);
const SECOND: Duration = Duration::from_secs(1);

fn watch_err(what: &str) -> impl FnOnce(nix::Error) -> InstallError + '_ {
    move |e| InstallError::Watch(format!("{what}: {e}"))
}

/// What the loop waits on.
struct Sources {
    signals: SignalFd,
    inotify: Inotify,
}

impl Sources {
    fn open(s: &super::settings::Settings) -> Result<Sources, InstallError> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block().map_err(watch_err("blocking SIGTERM"))?;
        let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(watch_err("signalfd"))?;
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(watch_err("inotify"))?;
        let changes = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_ATTRIB;
        let watch = |dir: &std::path::Path| {
            inotify
                .add_watch(dir, changes)
                .map(drop)
                .map_err(|e| InstallError::Watch(format!("watching {}: {e}", dir.display())))
        };
        watch(&s.conf_dir)?;
        // A removed plugin binary is put back at once, not at the next second.
        watch(&s.bin_dir)?;
        // The projected token is replaced by swapping a symlink in the directory.
        if s.kubernetes {
            watch(&s.sa_dir)?;
        }
        Ok(Sources { signals, inotify })
    }
}

/// Serves until SIGTERM or SIGINT; then uninstalls (when asked and alone) and returns.
pub fn serve(inst: &mut Installer, env: &dyn EnvSource) -> Result<(), InstallError> {
    let src = Sources::open(inst.settings())?;
    let mut due = Some(Instant::now());
    let mut tick = Instant::now() + SECOND;
    let mut not_before = Instant::now();
    let mut last: Option<State> = None;
    loop {
        let now = Instant::now();
        let mut wake = tick;
        if let Some(d) = due {
            wake = wake.min(d.max(not_before));
        }
        if inst.watching() {
            wake = wake.min(now + LOOK);
        }
        let timeout =
            PollTimeout::try_from(wake.saturating_duration_since(now)).unwrap_or(PollTimeout::MAX);
        let mut fds = [
            PollFd::new(src.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(src.inotify.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(watch_err("poll")(e)),
        }
        let fired = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        if fired(0) {
            if let Ok(Some(info)) = src.signals.read_signal() {
                logging::info(&format!("signal {}: stopping", info.ssi_signo));
            }
            return inst.stop();
        }
        let now = Instant::now();
        if fired(1) {
            let events = src.inotify.read_events().unwrap_or_default();
            let theirs = events
                .iter()
                .any(|e| e.name.as_ref().is_none_or(|n| !inst.is_own_temp(n)));
            if theirs {
                due = Some(now + QUIET);
            }
        }
        if inst.watching() && inst.adopt_overtaken() {
            due = Some(now + QUIET);
        }
        if now >= tick {
            due = Some(now);
            tick = now + SECOND;
        }
        if due.is_some_and(|d| now >= d.max(not_before)) {
            due = None;
            if inst.directory_gone() {
                return Err(InstallError::Watch(format!(
                    "{} was removed on the host (a new one there is not what this container's mount shows): exiting, for the kubelet to restart the installer on the new one",
                    inst.settings().conf_dir.display()
                )));
            }
            let pass = inst.pass(env);
            report(&mut last, &pass.state);
            if pass.failed {
                not_before = now + SECOND;
            } else if pass.again {
                due = Some(now + QUIET);
            }
        }
    }
}

/// Logs the installer's state when it changes.
fn report(last: &mut Option<State>, state: &State) {
    if last.as_ref() == Some(state) {
        return;
    }
    match state {
        State::Ready(what) => logging::info(&format!("ready: {what}")),
        State::NotReady(why) => logging::warn(&format!("not ready: {why}")),
        State::StandingBy => logging::info(
            "standing by: a newer installer on this node (an upgrade) owns the chain; writing nothing",
        ),
    }
    *last = Some(state.clone());
}
