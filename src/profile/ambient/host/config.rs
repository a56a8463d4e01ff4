//! Flags + environment → what to do and the node's policy, through the generic resolver (an
//! error names the flag or variable, the value and what is expected). The kubelet's uid is
//! looked for only when an nftables rule needs it (the netlink backend, or a JSON dry run)
//! and `--kubelet-uid` does not say it.

use std::path::{Path, PathBuf};

use super::build::Policy;
use super::flags as host;
use super::kubelet::NotFound;
use crate::flags::Flags;
use crate::host::Host;
use crate::options::{Action, BackendChoice, Early, RunOptions, Subcommand, Verb};
use crate::profile::ambient::flags as ambient;
use crate::resolve::{ConfigError, EnvSource, Origin, Resolver};
use crate::values::OutputFormat;

pub type Resolved = crate::options::Resolved<Policy>;

/// Where the kubelet is looked for.
const PROC: &str = "/proc";

pub fn early(flags: &Flags, sub: Subcommand, env: &dyn EnvSource) -> Result<Early, ConfigError> {
    let r = Resolver::new(flags, env);
    let verb = match sub {
        Subcommand::Apply => Verb::Apply,
        Subcommand::Clean => Verb::Clean,
        Subcommand::Check => Verb::Check,
    };
    let ns = r.get(&host::HOST_NAMESPACE)?;
    Ok(Early {
        action: Action {
            verb,
            dry_run: r.get(&ambient::DRY_RUN)?,
        },
        network_namespace: (!ns.trim().is_empty()).then(|| PathBuf::from(ns)),
        cni_mode: false,
    })
}

pub fn backend(r: &Resolver) -> Result<BackendChoice, ConfigError> {
    Ok(match r.get(&ambient::NATIVE_NFTABLES)? {
        true => BackendChoice::Netlink,
        false => BackendChoice::Iptables(r.get(&ambient::FORCE_IPTABLES_BINARY)?),
    })
}

pub fn resolve(
    flags: &Flags,
    early: &Early,
    env: &dyn EnvSource,
    _host: &dyn Host,
) -> Result<Resolved, ConfigError> {
    let r = Resolver::new(flags, env);
    let backend = backend(&r)?;
    let output = r.get(&ambient::OUTPUT)?;
    let needs_uid = early.action.verb != Verb::Clean
        && (backend == BackendChoice::Netlink || output == OutputFormat::Json);
    let kubelet_uid = match r.get(&host::KUBELET_UID)? {
        Some(u) => Some(u),
        None if needs_uid => Some(super::kubelet::find(Path::new(PROC)).map_err(|e| {
            let shows = match e {
                NotFound::None => "no kubelet, kubelite or k3s process".to_string(),
                NotFound::Ambiguous(found) => format!(
                    "such processes of different uids ({}), any of which may not be the kubelet",
                    found
                        .iter()
                        .map(|(pid, uid)| format!("pid {pid} uid {}", uid.0))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            ConfigError::Invalid {
                origin: Origin::Default("kubelet-uid"),
                value: String::new(),
                problem: format!(
                    "leaves the kubelet's uid to be found, and {PROC} shows {shows} (expected the kubelet's uid, which the nftables rule keys on)"
                ),
            }
        })?),
        None => None,
    };
    let policy = Policy {
        probe_v4: r.get(&ambient::PROBE_SNAT_IP)?,
        probe_v6: r.get(&ambient::PROBE_SNAT_IPV6)?,
        ipv6: r.get(&ambient::IPV6)?,
        kubelet_uid,
    };
    let run = RunOptions {
        backend,
        network_namespace: early.network_namespace.clone(),
        cni_mode: false,
        reconcile: false,
        force_apply: false,
        skip_rule_apply: false,
        validation: None,
        output,
        log_level: r.get(&ambient::LOG_OUTPUT_LEVEL)?,
        log_json: r.get(&ambient::LOG_AS_JSON)?,
    };
    Ok(Resolved {
        action: early.action,
        run,
        policy,
        warnings: Vec::new(),
    })
}
