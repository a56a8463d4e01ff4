//! Running the iptables binaries: directly by absolute path (no shell), stdin fed, stdout
//! returned; a failure quotes the binary, its status and its stderr. And the backend's errors.
//! A leaf of the iptables backend: detection and the backend both use it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::plan::Family;

#[derive(Debug, thiserror::Error)]
pub enum IptError {
    #[error(
        "no usable {} binary: {}. Use --native-nftables, which needs no binaries",
        binary_family(*family),
        reasons.join("; ")
    )]
    NoBinary {
        family: Family,
        reasons: Vec<String>,
    },
    #[error("{bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error(
        "{bin}: another process held the xtables lock ({lock}) for the whole wait (30 s); nothing was changed by this command. Find the holder (kube-proxy, another iptables run) or retry: {stderr}"
    )]
    Locked {
        bin: String,
        lock: String,
        stderr: String,
    },
    #[error("{bin} {status}: {stderr}")]
    Failed {
        bin: String,
        status: String,
        stderr: String,
    },
    #[error(
        "existing {} rules differ from the requested ones in {}; nothing was changed. Rerun with --reconcile to replace them",
        binary_family(*family),
        chains.join(", ")
    )]
    Drift { family: Family, chains: Vec<String> },
    #[error(
        "the live {} rules differ from the requested ones in {}",
        binary_family(*family),
        chains.join(", ")
    )]
    NotInPlace { family: Family, chains: Vec<String> },
    #[error(
        "not ours, left in place: {} chains of our name jump to chains that are not ours ({}): another scheme's (a pod is the sidecar's or ambient's, not both); nothing of this family was changed",
        binary_family(*family),
        chains.join(", ")
    )]
    Namesakes { family: Family, chains: Vec<String> },
    /// Config resolves every owner-group name before a backend runs; a name here is a bug.
    #[error("group {0:?} (in an owner-group rule) was not resolved to a gid")]
    UnresolvedGroup(String),
}

/// Fails on a group name: `-m owner --gid-owner NAME` would make iptables ask NSS.
pub(super) fn numeric_only(rules: &[crate::plan::XtRule]) -> Result<(), IptError> {
    for r in rules {
        for m in &r.matches {
            if let crate::plan::Match::Gid {
                gid: crate::plan::Group::Name(n),
                ..
            } = m
            {
                return Err(IptError::UnresolvedGroup(n.as_str().to_string()));
            }
        }
    }
    Ok(())
}

fn binary_family(f: Family) -> &'static str {
    match f {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

fn display(bin: &Path) -> String {
    bin.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| bin.display().to_string())
}

/// Runs `bin args` (no shell), feeding `stdin`; returns stdout, or an error that quotes the
/// binary, its exit status and its stderr.
pub fn run(
    bin: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Result<String, IptError> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let spawn_err = |source| IptError::Spawn {
        bin: display(bin),
        source,
    };
    let mut child = cmd.spawn().map_err(spawn_err)?;
    // stdin is piped exactly when there is input. A write error shows up as the child's
    // failure below.
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let _ = pipe.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let command = format!("{} {}", display(bin), args.join(" "))
        .trim_end()
        .to_string();
    // iptables: "Another app is currently holding the xtables lock. Stopped waiting after 30s."
    if stderr.contains("holding the xtables lock") {
        let lock = env
            .iter()
            .find(|(k, _)| *k == "XTABLES_LOCKFILE")
            .map_or("/run/xtables.lock", |(_, v)| v);
        return Err(IptError::Locked {
            bin: command,
            lock: lock.to_string(),
            stderr,
        });
    }
    Err(IptError::Failed {
        bin: command,
        status: match out.status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".into(),
        },
        stderr,
    })
}
