//! What the iptables backend asks of the machine, as one interface: where the binaries are
//! (by absolute path on PATH), running them (`exec::run`: no shell), and the nf_tables side it
//! needs besides them (detection's nat probe of the `-nft` variants, the fail-closed guard,
//! whether the kernel has legacy tables). `System` is the machine itself and what production
//! uses; another implementation lets the backend's decisions (which variant, whether to
//! write, what to write, what drifted) be driven by given `*-save` outputs, without root or
//! a kernel.

use std::path::{Path, PathBuf};

use super::exec::{self, IptError};
use crate::backend::nl::guard;
use crate::backend::nl::session::NetlinkError;
use crate::plan::Family;

/// The machine the iptables backend runs on.
pub trait Machine {
    /// The absolute path of program `name`, if it is installed.
    fn which(&self, name: &str) -> Option<PathBuf>;
    /// Runs `bin args` (no shell), feeding `stdin`, with `env` added; returns stdout, or an
    /// error that quotes the binary, its exit status and its stderr.
    fn run(
        &self,
        bin: &Path,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<String, IptError>;
    /// Whether this kernel runs nat chains for `family` over nf_tables (the `-nft` variants'
    /// detection probe); `Err` says why not.
    fn nat_probe_nf_tables(&self, family: Family) -> Result<(), String>;
    /// Whether the kernel has any legacy table for `family`.
    fn legacy_tables_exist(&self, family: Family) -> bool;
    /// Whether the fail-closed guard is up.
    fn guard_present(&self) -> Result<bool, NetlinkError>;
    /// Raises the guard.
    fn raise_guard(&self) -> Result<(), NetlinkError>;
    /// Lowers the guard (success when it is not up).
    fn lower_guard(&self) -> Result<(), NetlinkError>;
}

/// This machine: PATH, the binaries, the kernel.
pub struct System;

impl Machine for System {
    fn which(&self, name: &str) -> Option<PathBuf> {
        which(name)
    }

    fn run(
        &self,
        bin: &Path,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<String, IptError> {
        exec::run(bin, args, stdin, env)
    }

    fn nat_probe_nf_tables(&self, family: Family) -> Result<(), String> {
        crate::backend::nl::probe::probe_nat(family).map_err(|e| e.to_string())
    }

    /// Its `/proc/net` list exists once the module is loaded. Without it nothing of ours can
    /// be there, and `-legacy-save` fails trying to load the module.
    fn legacy_tables_exist(&self, family: Family) -> bool {
        let names = match family {
            Family::V4 => "/proc/net/ip_tables_names",
            Family::V6 => "/proc/net/ip6_tables_names",
        };
        Path::new(names).exists()
    }

    fn guard_present(&self) -> Result<bool, NetlinkError> {
        guard::present()
    }

    fn raise_guard(&self) -> Result<(), NetlinkError> {
        guard::raise()
    }

    fn lower_guard(&self) -> Result<(), NetlinkError> {
        guard::lower()
    }
}

/// The absolute path of `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
