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
        std::fs::read_to_string(Path::new(path)).map_err(|source| HostError::Read {
            path: path.into(),
            source,
        })
    }
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
    fn passwd_lookup() {
        let text = "root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/home:/bin/false\n";
        assert_eq!(passwd_uid(text, "istio-proxy"), Some(1337));
        assert_eq!(passwd_uid(text, "root"), Some(0));
        assert_eq!(passwd_uid(text, "nobody"), None);
    }
}
