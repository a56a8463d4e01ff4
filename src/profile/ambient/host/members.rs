//! `host add-pod|remove-pod`: a pod's addresses in or out of the probe sets, each member
//! carrying the pod's UID as its comment (upstream's `addPodToHostAddrSet`, an upsert, and
//! `removePodFromHostAddrSet`, which leaves a member of another pod's). Flags resolve here;
//! a dry run prints what would be done in upstream's words.

use std::io::Write;
use std::net::IpAddr;

use super::build::probe_set;
use super::flags::{self as host, PodUid};
use super::{build, config, upstream};
use crate::flags::Flags;
use crate::options::BackendChoice;
use crate::resolve::{ConfigError, EnvSource, Resolver};
use crate::run::RunError;
use crate::values::Family;

/// What a member command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberVerb {
    Add,
    Remove,
}

/// A member command, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub verb: MemberVerb,
    pub backend: BackendChoice,
    pub dry_run: bool,
    pub uid: PodUid,
    /// The addresses of the families that are on (an IPv6 one with IPv6 off is skipped, as
    /// upstream skips it).
    pub addrs: Vec<IpAddr>,
    pub skipped: Vec<IpAddr>,
}

fn required(r: &Resolver, spec: &'static crate::flags::Spec, what: &str) -> ConfigError {
    ConfigError::Invalid {
        origin: r.origin(spec),
        value: String::new(),
        problem: format!("is required by add-pod and remove-pod (expected {what})"),
    }
}

pub fn resolve(
    verb: MemberVerb,
    flags: &Flags,
    env: &dyn EnvSource,
) -> Result<Members, ConfigError> {
    let r = Resolver::new(flags, env);
    let uid = r
        .get(&host::POD_UID)?
        .ok_or_else(|| required(&r, &host::POD_UID.spec, "the pod's metadata.uid"))?;
    let ips = r.get(&host::POD_IPS)?;
    if ips.is_empty() {
        return Err(required(&r, &host::POD_IPS.spec, "the pod's addresses"));
    }
    let ipv6 = r.get(&crate::profile::ambient::flags::IPV6)?;
    let (addrs, skipped) = ips.into_iter().partition(|a| a.is_ipv4() || ipv6);
    Ok(Members {
        verb,
        backend: config::backend(&r)?,
        dry_run: r.get(&crate::profile::ambient::flags::DRY_RUN)?,
        uid,
        addrs,
        skipped,
    })
}

/// Runs a resolved member command.
/// With `--network-namespace`, inside that namespace (a dry run touches nothing).
pub fn run(
    m: &Members,
    flags: &Flags,
    env: &dyn EnvSource,
    stdout: &mut dyn Write,
) -> Result<(), RunError> {
    let ns = Resolver::new(flags, env).get(&host::HOST_NAMESPACE)?;
    if !m.dry_run && !ns.trim().is_empty() {
        let path = std::path::PathBuf::from(ns);
        let mut out = Vec::new();
        crate::netns::run_in(&path, || run_here(m, &mut out))??;
        return stdout.write_all(&out).map_err(RunError::Output);
    }
    run_here(m, stdout)
}

fn run_here(m: &Members, stdout: &mut dyn Write) -> Result<(), RunError> {
    for a in &m.skipped {
        crate::logging::info(&format!(
            "skipping {a}: IPv6 is off (--ambient-ipv6), as upstream skips it"
        ));
    }
    let netlink = m.backend == BackendChoice::Netlink;
    let table = build::SCHEME.tables.first().map_or("", |t| t.nft_name);
    if m.dry_run {
        let mut text = String::new();
        for a in &m.addrs {
            let f = family(*a);
            let add = m.verb == MemberVerb::Add;
            text.push_str(&upstream::member_line(
                netlink,
                table,
                &probe_set(f),
                *a,
                &m.uid,
                add,
            ));
        }
        return stdout.write_all(text.as_bytes()).map_err(RunError::Output);
    }
    let Some(layout) = build::SCHEME.layout(crate::plan::Table::Nat) else {
        return Ok(());
    };
    let members: Vec<(crate::plan::AddrSet, IpAddr)> = m
        .addrs
        .iter()
        .map(|a| (probe_set(family(*a)), *a))
        .collect();
    let add = m.verb == MemberVerb::Add;
    let _lock =
        crate::lock::acquire(crate::lock::WAIT).map_err(crate::backend::BackendError::from)?;
    let outcomes = if netlink {
        crate::backend::netlink::members::change(layout, &members, m.uid.as_str(), add)
            .map_err(crate::backend::BackendError::from)?
    } else {
        crate::backend::iptables::change_members(&members, m.uid.as_str(), add)?
    };
    for (a, o) in outcomes {
        use crate::backend::api::MemberOutcome as Outcome;
        let line = match o {
            Outcome::Added => format!("added {a} for pod {}", m.uid),
            Outcome::Kept => format!("{a} is pod {}'s already", m.uid),
            Outcome::TookOver(c) => format!(
                "{a} was pod {c}'s, now pod {}'s (an address is one pod's: upstream's upsert)",
                m.uid
            ),
            Outcome::Removed => format!("removed {a} of pod {}", m.uid),
            Outcome::Absent => format!("{a} is not in the probe set"),
            Outcome::LeftOthers(c) => {
                crate::logging::warn(&format!(
                    "{a} left in the probe set: it is pod {c}'s, not pod {}'s",
                    m.uid
                ));
                continue;
            }
        };
        crate::logging::info(&line);
    }
    Ok(())
}

fn family(a: IpAddr) -> Family {
    if a.is_ipv4() { Family::V4 } else { Family::V6 }
}
