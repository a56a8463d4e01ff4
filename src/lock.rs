//! One writer per network namespace. Every run that reads or changes a namespace's rules
//! holds this lock for the whole of it (detection, reading, the transaction or restores,
//! policy routing), so concurrent runs queue instead of interleaving.
//!
//! The lock is an abstract unix socket (`@meshtables/netns-lock`) bound in the namespace:
//! abstract names belong to the network namespace, not to a filesystem, so every process
//! in that namespace sees the same name whatever its mount namespace (an init container, a
//! restarted one, the CNI plugin on the node), and the kernel releases the name when the
//! holder exits, however it exits (kill -9 included): a crash never leaves a stale lock. A
//! file lock could do neither: /run/xtables.lock is a different file in each container.

use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, bind, socket};

/// The name, in the namespace's abstract socket space.
const NAME: &[u8] = b"meshtables/netns-lock";

/// How long a run waits for another to finish before giving up (iptables' `--wait=30`).
pub const WAIT: Duration = Duration::from_secs(30);

/// Failing to take the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another meshtables run has held this network namespace's lock (@meshtables/netns-lock) for {0:?}; it is still applying or cleaning, or is stuck"
    )]
    Busy(Duration),
    #[error("the network namespace's lock (@meshtables/netns-lock): {0}")]
    Socket(#[source] std::io::Error),
}

/// The held lock; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct NetnsLock {
    _sock: OwnedFd,
}

/// Takes the lock of the network namespace the calling thread is in, waiting up to `wait`
/// for a run that holds it.
pub fn acquire(wait: Duration) -> Result<NetnsLock, LockError> {
    let start = Instant::now();
    let addr = UnixAddr::new_abstract(NAME).map_err(|e| LockError::Socket(e.into()))?;
    let mut pause = Duration::from_millis(2);
    loop {
        let sock = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| LockError::Socket(e.into()))?;
        match bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr) {
            Ok(()) => return Ok(NetnsLock { _sock: sock }),
            Err(Errno::EADDRINUSE) if start.elapsed() < wait => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(Errno::EADDRINUSE) => return Err(LockError::Busy(start.elapsed())),
            Err(e) => return Err(LockError::Socket(e.into())),
        }
    }
}

/// Takes the lock of the open network namespace `netns` (`path` names it in errors), from a
/// thread that enters it, waiting up to `wait`. The lock is that namespace's (the socket
/// stays in it) whichever thread holds the value: the node agent takes a pod's before it
/// queues behind the node's other pods, then runs with it held (`run::Waits::held`).
pub fn acquire_in(
    netns: &std::fs::File,
    path: &std::path::Path,
    wait: Duration,
) -> Result<NetnsLock, LockError> {
    crate::netns::run_in_file(netns, path, || acquire(wait))
        .map_err(|e| LockError::Socket(std::io::Error::other(e.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        // Tests of this process share a namespace: the lock is the same for all of them.
        let held = acquire(WAIT).unwrap();
        assert!(matches!(
            acquire(Duration::from_millis(20)),
            Err(LockError::Busy(_))
        ));
        drop(held);
        assert!(acquire(Duration::from_millis(200)).is_ok());
    }
}
