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

    /// Whether any other installer is running on this node.
    pub fn others_alive(&self) -> bool {
        self.held_by_another(0, 0).unwrap_or(true)
    }

    /// Whether the installer with this id is running (for its leftover temporary files).
    pub fn alive(&self, id: u64) -> bool {
        id == self.id || self.held_by_another(id, 1).unwrap_or(true)
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
        assert!(!old.newer_alive() && !old.others_alive());
        let new = Presence::join(&dir).unwrap();
        assert!(new.id() > old.id());
        assert!(old.newer_alive() && old.others_alive() && old.alive(new.id()));
        assert!(!new.newer_alive() && new.others_alive());
        drop(new);
        assert!(!old.newer_alive() && !old.others_alive());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
