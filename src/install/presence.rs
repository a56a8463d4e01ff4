//! Which installers run on this node, and which of them is the newest: without a lock file.
//!
//! Every installer holds, for its whole life, an open-file-description read lock on one
//! byte of the configuration directory itself (`F_OFD_SETLK` on a read-only directory fd):
//! the byte at offset `id`, where `id` is the node's `CLOCK_BOOTTIME` in nanoseconds when it
//! started. The directory is the host's (a hostPath mount), so installers in different pods,
//! mount and PID namespaces meet on the same inode; the kernel drops the lock when the
//! process dies, SIGKILL included, and nothing is left on disk. Read locks never conflict with
//! each other, so they cannot block anyone; `F_OFD_GETLK` asking for a write lock over a range
//! reports whether some other installer holds a byte in it, which answers both questions the
//! installer asks: "is anyone newer than me alive?" (then it stands by: the newest installer
//! owns the chain, so an upgrade's new pod takes over and the old one stops writing) and "am I
//! alone?" (only the last installer on the node uninstalls). Boot time is shared by every
//! container on the node and never goes backwards, so "newer" means "started later".

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
use nix::libc;
use nix::sys::stat::Mode;

/// This installer's place among the node's installers.
#[derive(Debug)]
pub struct Presence {
    dir: OwnedFd,
    id: u64,
}

/// The lock record for one byte at `start` (or to the end of the file with `len` 0).
fn record(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start.min(i64::MAX as u64) as libc::off_t,
        l_len: len.min(i64::MAX as u64) as libc::off_t,
        l_pid: 0,
    }
}

impl Presence {
    /// Announces this installer in `dir` (the configuration directory).
    pub fn join(dir: &Path) -> nix::Result<Presence> {
        let fd = open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)?;
        let mut id = (now.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(now.tv_nsec() as u64);
        let mut me = Presence { dir: fd, id };
        // Two installers started in the same nanosecond: take the next free byte.
        while me.held_by_another(id, 1)? {
            id += 1;
            me.id = id;
        }
        fcntl(
            me.dir.as_fd(),
            FcntlArg::F_OFD_SETLK(&record(libc::F_RDLCK, id, 1)),
        )?;
        Ok(me)
    }

    /// A view of the node's installers that announces nothing (at uninstall, after leaving).
    pub fn observer(dir: &Path) -> nix::Result<Presence> {
        let fd = open(
            dir,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Presence {
            dir: fd,
            id: u64::MAX,
        })
    }

    /// This installer's id (its start, in boot-time nanoseconds).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether an installer other than this one holds a byte in `start..start+len` (`len` 0:
    /// to the end). Our own lock never counts: locks of one open file description do not
    /// conflict with each other.
    fn held_by_another(&self, start: u64, len: u64) -> nix::Result<bool> {
        let mut probe = record(libc::F_WRLCK, start, len);
        fcntl(self.dir.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe))?;
        Ok(probe.l_type != libc::F_UNLCK as libc::c_short)
    }

    /// Whether an installer that started after this one is running.
    pub fn newer_alive(&self) -> bool {
        self.held_by_another(self.id + 1, 0).unwrap_or(false)
    }

    /// Whether the installer with this id is running (for its leftover temporary files).
    pub fn alive(&self, id: u64) -> bool {
        id == self.id || self.held_by_another(id, 1).unwrap_or(true)
    }

    /// Whether the directory this installer announced itself in has been removed (its link
    /// count is 0): the host made a new one, which this process's mount does not show.
    pub fn dir_gone(&self) -> bool {
        nix::sys::stat::fstat(&self.dir).is_ok_and(|st| st.st_nlink == 0)
    }

    /// Leaves the node's installers for good, one stopping installer at a time: under an
    /// exclusive `flock` of the directory (waiting up to `wait` for another stopping one),
    /// this installer's byte is released, then the others are counted. Returns whether it was
    /// the last one, and the guard to hold while it uninstalls, so that of installers stopped
    /// together exactly the last one uninstalls. `None` (a stopper that never let go) means:
    /// do not uninstall.
    pub fn leave(self, dir: &Path, wait: std::time::Duration) -> Option<(bool, Flock<OwnedFd>)> {
        let open_dir = || {
            open(
                dir,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        let deadline = std::time::Instant::now() + wait;
        let mut fd = open_dir().ok()?;
        let guard = loop {
            match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
                Ok(g) => break g,
                Err((back, _)) if std::time::Instant::now() < deadline => {
                    fd = back;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        };
        let probe = Presence::observer(dir).ok()?;
        drop(self);
        let alone = !probe.held_by_another(0, 0).unwrap_or(true);
        Some((alone, guard))
    }
}

use nix::fcntl::{Flock, FlockArg};

/// The lock file of installers before this one (`.meshtables-cni-installers.lock`): each held
/// it shared, and uninstalled at SIGTERM only if it could take it exclusively. Held shared for
/// as long as this installer runs when it exists, so that such an older installer, stopped
/// during an upgrade to this one, leaves the plugin installed; removed by the last installer to
/// uninstall once no one holds it. Never created.
pub struct Legacy {
    /// Held, not read: the lock lasts as long as the value.
    _held: Option<Flock<std::fs::File>>,
}

pub const LEGACY_LOCK: &str = ".meshtables-cni-installers.lock";

impl Legacy {
    pub fn hold(dir: &Path) -> Legacy {
        let file = std::fs::File::open(dir.join(LEGACY_LOCK)).ok();
        Legacy {
            _held: file.and_then(|f| Flock::lock(f, FlockArg::LockSharedNonblock).ok()),
        }
    }

    /// Lets go, and removes the file if no older installer holds it any more.
    pub fn release_and_remove(self, dir: &Path) {
        drop(self);
        let path = dir.join(LEGACY_LOCK);
        if let Ok(f) = std::fs::File::open(&path)
            && Flock::lock(f, FlockArg::LockExclusiveNonblock).is_ok()
        {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_installer_is_newer_and_sees_the_first() {
        let dir = std::env::temp_dir().join(format!("mt-presence-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = Presence::join(&dir).unwrap();
        assert!(!old.newer_alive());
        let new = Presence::join(&dir).unwrap();
        assert!(new.id() > old.id());
        assert!(old.newer_alive() && old.alive(new.id()));
        assert!(!new.newer_alive() && new.alive(old.id()));
        let id = new.id();
        drop(new);
        assert!(!old.newer_alive() && !old.alive(id));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn of_two_installers_leaving_together_the_second_is_the_last() {
        let dir = std::env::temp_dir().join(format!("mt-presence-leave-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = Presence::join(&dir).unwrap();
        let b = Presence::join(&dir).unwrap();
        let (alone, guard) = a.leave(&dir, std::time::Duration::from_secs(1)).unwrap();
        assert!(!alone, "b is still there");
        // b waits for a's guard.
        assert!(
            b.leave(&dir, std::time::Duration::from_millis(50))
                .is_none()
        );
        drop(guard);
        let b = Presence::join(&dir).unwrap();
        let (alone, _g) = b.leave(&dir, std::time::Duration::from_secs(1)).unwrap();
        assert!(alone);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
