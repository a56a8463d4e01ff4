//! The installer's event loop: one `poll` over inotify (the configuration directory and the
//! service account directory), a signalfd (SIGTERM, SIGINT) and the readiness listener, with
//! a one-second timeout after which the chain is checked anyway (an event missed is a second
//! late, not lost).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::{InstallError, Installer};
use crate::config::EnvSource;
use crate::logging;

fn watch_err(what: &str) -> impl FnOnce(nix::Error) -> InstallError + '_ {
    move |e| InstallError::Watch(format!("{what}: {e}"))
}

/// What the loop waits on.
struct Sources {
    signals: SignalFd,
    inotify: Inotify,
    /// The configuration directory's watch (any other is the service account's).
    conf_watch: nix::sys::inotify::WatchDescriptor,
    listener: std::net::TcpListener,
    /// The node's installers' lock, held shared while running.
    lock: nix::fcntl::Flock<std::fs::File>,
}

impl Sources {
    fn open(s: &super::Settings) -> Result<Sources, InstallError> {
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
                .map_err(|e| InstallError::Watch(format!("watching {}: {e}", dir.display())))
        };
        let conf_watch = watch(&s.conf_dir)?;
        // The projected token is replaced by swapping a symlink in the directory.
        if s.kubernetes {
            watch(&s.sa_dir)?;
        }
        // A typed address: a `(&str, u16)` would link glibc's resolver (NSS, dlopen) into the
        // static binary, though a literal address never reaches it.
        let any = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, s.readiness_port));
        let listener = std::net::TcpListener::bind(any)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| InstallError::Io {
                what: "listening for readiness probes on port",
                path: s.readiness_port.to_string().into(),
                source: e,
            })?;
        // Every installer on this node holds a shared lock on a file beside the
        // configuration (the host's directory, so installers in different pods meet). At
        // SIGTERM it uninstalls only if it can take the lock exclusively: during a rolling
        // upgrade the new installer already runs, and the plugin stays installed.
        let path = s.conf_dir.join(".meshtables-cni-installers.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| InstallError::Io {
                what: "opening",
                path: path.clone(),
                source: e,
            })?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockShared)
            .map_err(|(_, e)| watch_err("locking the installers' lock")(e))?;
        Ok(Sources {
            signals,
            inotify,
            conf_watch,
            listener,
            lock,
        })
    }
}

/// Serves until SIGTERM or SIGINT; then uninstalls (when asked) and returns.
pub fn serve(inst: &mut Installer, env: &dyn EnvSource) -> Result<(), InstallError> {
    let s = inst.settings().clone();
    let src = Sources::open(&s)?;
    let mut ready = inst.reconcile()?;
    report(ready, None);
    loop {
        let mut fds = [
            PollFd::new(src.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(src.inotify.as_fd(), PollFlags::POLLIN),
            PollFd::new(src.listener.as_fd(), PollFlags::POLLIN),
        ];
        let timeout = PollTimeout::try_from(Duration::from_secs(1)).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(watch_err("poll")(e)),
        }
        let fired = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        let (signal, fs_event, probe) = (fired(0), fired(1), fired(2));
        if signal {
            return stop(inst, &src);
        }
        if fs_event {
            let events = src.inotify.read_events().unwrap_or_default();
            if events.iter().any(|e| e.wd != src.conf_watch)
                && let Err(e) = inst.refresh_kubeconfig(env)
            {
                logging::error(&format!("the plugin's kubeconfig: {e}"));
            }
        }
        // After any event, and every second: the binary must be in place (an installer that
        // stopped may have removed it), and the chain must still hold the plugin.
        if let Err(e) = inst.install_binary() {
            logging::error(&e.to_string());
        }
        let was = ready;
        ready = inst.reconcile().unwrap_or_else(|e| {
            logging::error(&e.to_string());
            false
        });
        report(ready, Some(was));
        if probe {
            answer_probes(&src.listener, ready);
        }
    }
}

/// SIGTERM or SIGINT: uninstall, unless told not to or another installer runs on the node.
fn stop(inst: &mut Installer, src: &Sources) -> Result<(), InstallError> {
    if let Ok(Some(info)) = src.signals.read_signal() {
        logging::info(&format!("signal {}: stopping", info.ssi_signo));
    }
    if !inst.settings().uninstall {
        return Ok(());
    }
    let alone = src
        .lock
        .relock(nix::fcntl::FlockArg::LockExclusiveNonblock)
        .is_ok();
    if !alone {
        logging::info(
            "another installer runs on this node (an upgrade): leaving the plugin installed",
        );
        return Ok(());
    }
    let failures = inst.uninstall();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Watch(format!(
            "uninstall left things behind: {}",
            failures.join("; ")
        )))
    }
}

fn report(ready: bool, was: Option<bool>) {
    if was == Some(ready) {
        return;
    }
    if ready {
        logging::info("ready: the primary network's chain holds meshtables-cni");
    } else {
        logging::warn(
            "not ready: no primary network configuration holds meshtables-cni yet (waiting for one)",
        );
    }
}

/// Answers every queued readiness connection: 200 when ready, else 503.
fn answer_probes(listener: &std::net::TcpListener, ready: bool) {
    while let Ok((mut c, _)) = listener.accept() {
        let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = [0u8; 1024];
        let _ = c.read(&mut buf);
        let (status, body) = if ready {
            ("200 OK", "ready\n")
        } else {
            (
                "503 Service Unavailable",
                "meshtables-cni is not in the chain\n",
            )
        };
        let _ = write!(
            c,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
