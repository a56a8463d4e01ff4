//! Facts read from the machine: interface addresses, files such as resolv.conf and
//! /etc/passwd. Behind the `Host` trait so config resolution can be tested with fakes.
//! User lookups read /etc/passwd directly: no NSS module (LDAP, OS Login) is ever loaded.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Errors reading the machine.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to list interface addresses: {0}")]
    Addrs(#[source] std::io::Error),
}

/// Machine facts that configuration depends on. `Sync`, so they can be read from inside a
/// network namespace entered on another thread.
pub trait Host: Sync {
    /// Addresses of all interfaces, in the kernel's order (IPv4 before IPv6).
    fn interface_addrs(&self) -> Result<Vec<IpAddr>, HostError>;
    /// A whole text file.
    fn read_file(&self, path: &str) -> Result<String, HostError>;
    /// The uid of `user` from the passwd file; `None` when absent or unreadable.
    fn lookup_uid(&self, user: &str) -> Result<Option<u32>, HostError> {
        Ok(self
            .read_file("/etc/passwd")
            .ok()
            .and_then(|text| passwd_uid(&text, user)))
    }
    /// The gid of group `name` from /etc/group; `None` when absent or unreadable.
    fn lookup_gid(&self, name: &str) -> Option<u32> {
        self.read_file("/etc/group")
            .ok()
            .and_then(|text| group_gid(&text, name))
    }
}

/// The gid of group `name` in group-format `text` (/etc/group).
pub fn group_gid(text: &str, name: &str) -> Option<u32> {
    passwd_uid(text, name)
}

/// The running machine (or the network namespace the process is in).
pub struct System;

impl Host for System {
    fn interface_addrs(&self) -> Result<Vec<IpAddr>, HostError> {
        let addrs =
            nix::ifaddrs::getifaddrs().map_err(|e| HostError::Addrs(std::io::Error::from(e)))?;
        Ok(addrs
            .filter_map(|ifa| {
                let a = ifa.address?;
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .collect())
    }

    fn read_file(&self, path: &str) -> Result<String, HostError> {
        read_small(path).map_err(|source| HostError::Read {
            path: path.into(),
            source,
        })
    }
}

/// The largest file meshtables reads whole (resolv.conf, /etc/passwd, /etc/group, hosts,
/// kubeconfig, token, certificates): far above any real one, far below a memory problem.
pub const MAX_FILE: u64 = 1 << 20;

/// Reads a whole file a user or the machine names, refusing what could block or grow without
/// bound: it is opened with O_NONBLOCK (a FIFO cannot block the open) and must be a regular file
/// (a FIFO, a device such as /dev/zero, or a directory is an error) of at most `max` bytes.
pub fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_NOCTTY).bits())
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        )
    };
    if meta.len() > max {
        return Err(too_big());
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    // The size can change after fstat (a file being written): read at most one byte more.
    file.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(too_big());
    }
    Ok(out)
}

/// `read_bounded` with the `MAX_FILE` cap, as UTF-8 text.
pub fn read_small(path: impl AsRef<Path>) -> std::io::Result<String> {
    let bytes = read_bounded(path.as_ref(), MAX_FILE)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Upstream's `getLocalIP` (docs/upstream.md, "Host facts"): skip loopback and link-local;
/// without dual-stack the first address decides; with dual-stack the first IPv6 address wins,
/// else the first address. Returns the address settled on and whether IPv6 is on.
pub fn detect_ipv6(addrs: &[IpAddr], dual_stack: bool) -> Option<(IpAddr, bool)> {
    let usable = addrs.iter().map(|a| a.to_canonical()).filter(|a| match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            let link_local_multicast = v6.is_multicast() && (v6.segments()[0] & 0x000f) == 2;
            !(v6.is_loopback() || v6.is_unicast_link_local() || link_local_multicast)
        }
    });
    let mut first = None;
    for a in usable {
        if !dual_stack {
            return Some((a, a.is_ipv6()));
        }
        let first = *first.get_or_insert(a);
        if a.is_ipv6() {
            return Some((first, true));
        }
    }
    first.map(|a| (a, false))
}

/// `nameserver` entries of a resolv.conf; unparsable entries are dropped, as upstream.
pub fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next()).flatten()
        })
        .filter_map(|s| s.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

/// The uid of `user` in passwd-format `text`.
pub fn passwd_uid(text: &str, user: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == user).then_some(())?;
        f.next()?;
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_refuse_what_is_not_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("mt-host-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let small = dir.join("small");
        std::fs::write(&small, "nameserver 10.0.0.1\n").unwrap();
        assert_eq!(read_small(&small).unwrap(), "nameserver 10.0.0.1\n");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert!(read_bounded(&big, 1024).is_err());
        assert!(read_bounded(&dir, 1024).is_err(), "a directory");
        assert!(read_small("/dev/zero").is_err(), "a device");
        let fifo = dir.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Without O_NONBLOCK this open would block forever (no writer).
        assert!(read_small(&fifo).is_err(), "a FIFO");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ipv6_detection_as_upstream() {
        let a = |s: &str| -> IpAddr { s.parse().unwrap() };
        let addrs = [a("127.0.0.1"), a("fe80::1"), a("10.0.0.5"), a("fd00::5")];
        assert_eq!(detect_ipv6(&addrs, false), Some((a("10.0.0.5"), false)));
        assert_eq!(detect_ipv6(&addrs, true), Some((a("10.0.0.5"), true)));
        assert_eq!(
            detect_ipv6(&[a("::1"), a("fd00::5")], false),
            Some((a("fd00::5"), true))
        );
        assert_eq!(detect_ipv6(&[a("127.0.0.1")], true), None);
    }

    #[test]
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/home:/bin/false\n";
        assert_eq!(passwd_uid(text, "istio-proxy"), Some(1337));
        assert_eq!(passwd_uid(text, "root"), Some(0));
        assert_eq!(passwd_uid(text, "nobody"), None);
    }
}
