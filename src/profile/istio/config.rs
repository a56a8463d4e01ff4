//! Flags + environment + host facts → three things, each decided here once:
//!
//! - `Action`: what to do (apply, clean, check; dry run or not), from the subcommand,
//!   `--cleanup-only` and `--dry-run`, before any host fact is read or backend chosen;
//! - `RunOptions`: how to run (backend, namespace, reconcile, validation, output, logging);
//! - `Policy`: everything the rules depend on, host facts (IPv6, DNS servers, the proxy uid,
//!   owner-group ids) already read.
//!
//! Every flag's name, variables, default and parser come from the flag table (`flags`).
//! Precedence is upstream's: command-line flag > later env var > earlier env var > default.
//! Unlike upstream, a bad value is never copied into rules or silently ignored: it is an error
//! that names the flag or variable, the value and what is expected (docs/upstream.md, "Flags
//! and environment").

use std::net::IpAddr;
use std::path::PathBuf;

use crate::flags::{Flags, Spec};
use crate::host::Host;
pub use crate::options::{Action, BackendChoice, Early, RunOptions, Subcommand, Validation, Verb};
use crate::profile::istio::flags;
use crate::profile::istio::policy::{Dns, Policy};
pub use crate::resolve::{ConfigError, EnvSource, Origin, ProcessEnv, Resolver};
use crate::resolve::{Raw, invalid};
use crate::values::{self, Group, Ipv6Setting, OwnerGroups};

/// A resolved configuration of Istio's flags.
pub type Resolved = crate::options::Resolved<Policy>;

/// Decides `Early` from the subcommand, flags and environment: the one decision of what to
/// do. `clean`, and `apply` with `--cleanup-only` (flag or `CLEANUP_ONLY`), clean; `check`
/// with `--cleanup-only` is a contradiction, refused.
pub fn early(flags: &Flags, sub: Subcommand, env: &dyn EnvSource) -> Result<Early, ConfigError> {
    let r = Resolver::new(flags, env);
    let cleanup_only = r.get(&flags::CLEANUP_ONLY)?;
    let verb = match (sub, cleanup_only) {
        (Subcommand::Clean, _) | (Subcommand::Apply, true) => Verb::Clean,
        (Subcommand::Apply, false) => Verb::Apply,
        (Subcommand::Check, false) => Verb::Check,
        (Subcommand::Check, true) => match r.raw(&flags::CLEANUP_ONLY.spec) {
            Some(raw) => {
                return Err(invalid(
                    raw,
                    "asks for a clean, but `check` compares the live rules with what apply installs (drop --cleanup-only, or run `clean`)",
                ));
            }
            None => Verb::Check,
        },
    };
    let ns = r.get(&flags::NETWORK_NAMESPACE)?;
    let network_namespace = (!ns.is_empty()).then(|| PathBuf::from(ns));
    Ok(Early {
        action: Action {
            verb,
            dry_run: r.get(&flags::DRY_RUN)?,
        },
        network_namespace,
        cni_mode: r.get(&flags::CNI_MODE)?,
    })
}

/// Resolves flags, environment and host facts for the action `early` decided.
pub fn resolve(
    flags: &Flags,
    early: &Early,
    env: &dyn EnvSource,
    host: &dyn Host,
) -> Result<Resolved, ConfigError> {
    let r = Resolver::new(flags, env);
    let mut warnings = Vec::new();
    let (ipv6, host_ip) = ipv6(&r, host, early.action)?;
    let policy = Policy {
        proxy_port: r.get(&flags::ENVOY_PORT)?,
        inbound_capture_port: r.get(&flags::INBOUND_CAPTURE_PORT)?,
        inbound_tunnel_port: r.get(&flags::INBOUND_TUNNEL_PORT)?,
        proxy_uids: r.get_uids(host, env)?,
        proxy_gids: r.get_gids(host, env)?,
        mode: r.get(&flags::INTERCEPTION_MODE)?,
        inbound_ports: r.get(&flags::INBOUND_PORTS)?,
        local_exclude_ports: r.get(&flags::LOCAL_EXCLUDE_PORTS)?,
        exclude_interfaces: r.get(&flags::EXCLUDE_INTERFACES)?,
        kube_virt_interfaces: r.get(&flags::KUBE_VIRT_INTERFACES)?,
        outbound_include: r.get(&flags::SERVICE_CIDR)?,
        outbound_exclude: r.get(&flags::SERVICE_EXCLUDE_CIDR)?,
        outbound_ports_include: r.get(&flags::OUTBOUND_PORTS)?,
        outbound_ports_exclude: r.get(&flags::OUTBOUND_PORTS_EXCLUDE)?,
        tproxy_mark: r.get(&flags::TPROXY_MARK)?,
        tproxy_route_table: r.get(&flags::TPROXY_ROUTE_TABLE)?,
        drop_invalid: r.get(&flags::DROP_INVALID)?,
        ipv6,
        dns: dns(&r, host, &mut warnings)?,
        owner_groups_include: OwnerGroups::All,
        owner_groups_exclude: Vec::new(),
        ipv4_loopback_cidr: r.get(&flags::IPV4_LOOPBACK_CIDR)?,
        compact: r.get(&flags::COMPACT)?,
    };
    let run = run_options(&r, early, &policy, host_ip)?;
    let policy = owner_groups(&r, host, early.action, run.cni_mode, policy)?;
    Ok(Resolved {
        action: early.action,
        run,
        policy,
        warnings,
    })
}

impl Resolver<'_> {
    /// `-u`; empty means "look the proxy user up", as upstream (in /etc/passwd, never NSS).
    fn get_uids(
        &self,
        host: &dyn Host,
        env: &dyn EnvSource,
    ) -> Result<Vec<values::Uid>, ConfigError> {
        let raw = match self.non_blank(&flags::PROXY_UID.spec) {
            Some(raw) => raw,
            None => Raw {
                value: default_uid(host, env)?.to_string(),
                origin: Origin::Default(flags::PROXY_UID.spec.long),
            },
        };
        Self::parse(&flags::PROXY_UID, raw)
    }

    /// `-g`; empty means the text of `-u` (upstream copies the uid string, not the user's
    /// group).
    fn get_gids(&self, host: &dyn Host, env: &dyn EnvSource) -> Result<Vec<Group>, ConfigError> {
        let raw = match self.non_blank(&flags::PROXY_GID.spec) {
            Some(raw) => raw,
            None => Raw {
                value: match self.non_blank(&flags::PROXY_UID.spec) {
                    Some(uid) => uid.value,
                    None => default_uid(host, env)?.to_string(),
                },
                origin: Origin::Default(flags::PROXY_GID.spec.long),
            },
        };
        Self::parse(&flags::PROXY_GID, raw)
    }
}

/// The uid of `$ENVOY_USER` (else istio-proxy) in /etc/passwd, else 1337.
fn default_uid(host: &dyn Host, env: &dyn EnvSource) -> Result<u32, ConfigError> {
    let user = env
        .var("ENVOY_USER")
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "istio-proxy".into());
    Ok(host.lookup_uid(&user)?.unwrap_or(1337))
}

/// Whether IPv6 rules are programmed, and the address detection settled on (for validation).
/// A clean needs no address: it removes both families' rules.
fn ipv6(
    r: &Resolver,
    host: &dyn Host,
    action: Action,
) -> Result<(bool, Option<IpAddr>), ConfigError> {
    match r.get(&flags::ENABLE_IPV6)? {
        Ipv6Setting::On => Ok((true, None)),
        Ipv6Setting::Off => Ok((false, None)),
        Ipv6Setting::Auto => {
            let dual_stack = r.get(&flags::DUAL_STACK)?;
            match crate::host::detect_ipv6(&host.interface_addrs()?, dual_stack) {
                Some((ip, v6)) => Ok((v6, Some(ip))),
                None if action.verb == Verb::Clean => Ok((true, None)),
                None => Err(ConfigError::NoLocalIp),
            }
        }
    }
}

/// DNS capture: off unless `--redirect-dns`; then everything with `--capture-all-dns`, else
/// the resolvers of `--dns-servers` or, when that is not given, of resolv.conf; with none,
/// off (upstream's warning).
fn dns(r: &Resolver, host: &dyn Host, warnings: &mut Vec<String>) -> Result<Dns, ConfigError> {
    let redirect = r.get(&flags::REDIRECT_DNS)?;
    let all = r.get(&flags::CAPTURE_ALL_DNS)?;
    let given = r.given(&flags::DNS_SERVERS)?;
    let resolv = r.raw(&flags::RESOLV_CONF.spec);
    let resolv_path = r.get(&flags::RESOLV_CONF)?;
    if resolv_path.trim().is_empty() {
        let raw = resolv.unwrap_or(Raw {
            value: String::new(),
            origin: Origin::Default(flags::RESOLV_CONF.spec.long),
        });
        return Err(invalid(raw, "is not a path"));
    }
    if !redirect {
        return Ok(Dns::Off);
    }
    if all {
        return Ok(Dns::All);
    }
    let servers = match given {
        Some(list) => list,
        None => match host.read_file(resolv_path.trim()) {
            Ok(text) => crate::host::resolv_conf_servers(&text),
            Err(crate::host::HostError::Read { source, .. }) => {
                let raw = resolv.unwrap_or(Raw {
                    value: resolv_path.clone(),
                    origin: Origin::Default(flags::RESOLV_CONF.spec.long),
                });
                return Err(invalid(
                    raw,
                    format!(
                        "cannot be read ({source}); expected a resolv.conf file of at most 1 MiB"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        },
    };
    if servers.is_empty() {
        warnings.push(
            "REDIRECT_DNS is set, but CAPTURE_ALL_DNS is false, and no DNS servers provided. DNS capture disabled."
                .into(),
        );
        return Ok(Dns::Off);
    }
    let (v4, v6) = servers.into_iter().partition(|a| a.is_ipv4());
    Ok(Dns::Servers { v4, v6 })
}

fn run_options(
    r: &Resolver,
    early: &Early,
    policy: &Policy,
    host_ip: Option<IpAddr>,
) -> Result<RunOptions, ConfigError> {
    let backend = match (
        r.get(&flags::NATIVE_NFTABLES)?,
        r.get(&flags::FORCE_IPTABLES_BINARY)?,
    ) {
        (true, _) => BackendChoice::Netlink,
        (false, variant) => BackendChoice::Iptables(variant),
    };
    let validation = Validation {
        probe_port: r.get(&flags::PROBE_PORT)?,
        proxy_port: policy.proxy_port,
        inbound_capture_port: policy.inbound_capture_port,
        timeout: r.get(&flags::PROBE_TIMEOUT)?,
        ipv6: host_ip.is_some_and(|ip| ip.is_ipv6()),
    };
    // Accepted for compatibility; parsed so that nothing given is silently wrong.
    r.get(&flags::LOG_TARGET)?;
    r.get(&flags::LOG_CALLER)?;
    r.get(&flags::LOG_STACKTRACE_LEVEL)?;
    Ok(RunOptions {
        backend,
        network_namespace: early.network_namespace.clone(),
        cni_mode: r.get(&flags::CNI_MODE)?,
        reconcile: r.get(&flags::RECONCILE)?,
        force_apply: r.get(&flags::FORCE_APPLY)?,
        skip_rule_apply: r.get(&flags::SKIP_RULE_APPLY)?,
        validation: r.get(&flags::RUN_VALIDATION)?.then_some(validation),
        output: r.get(&flags::OUTPUT)?,
        log_level: r.get(&flags::LOG_OUTPUT_LEVEL)?,
        log_json: r.get(&flags::LOG_AS_JSON)?,
    })
}

/// Owner groups, with names turned into gids (`GroupNames`).
fn owner_groups(
    r: &Resolver,
    host: &dyn Host,
    action: Action,
    cni_mode: bool,
    mut policy: Policy,
) -> Result<Policy, ConfigError> {
    let names = GroupNames {
        host,
        cni_mode,
        dry_run: action.dry_run,
        clean: action.verb == Verb::Clean,
    };
    let origin = |s: &'static Spec| {
        r.raw(s)
            .map(|raw| (raw.origin, raw.value))
            .unwrap_or((Origin::Default(s.long), s.default.unwrap_or("").to_string()))
    };
    if let OwnerGroups::List(list) = r.get(&flags::OWNER_GROUPS)? {
        let (o, text) = origin(&flags::OWNER_GROUPS.spec);
        policy.owner_groups_include = OwnerGroups::List(names.resolve(list, &o, &text)?);
    }
    let (o, text) = origin(&flags::OWNER_GROUPS_EXCLUDE.spec);
    policy.owner_groups_exclude = names.resolve(r.get(&flags::OWNER_GROUPS_EXCLUDE)?, &o, &text)?;
    Ok(policy)
}

/// Owner groups given by name become gids here, once, before any backend: from /etc/group,
/// never through NSS (`-m owner --gid-owner NAME` would make iptables ask NSS, which may be
/// LDAP or OS Login). A dry run prints names as given, as upstream does; a clean keeps a name it
/// cannot resolve (it removes our chains whatever their rules say). In CNI mode only numeric
/// gids are accepted and no file is read: the host's /etc/group is not the pod's.
struct GroupNames<'a> {
    host: &'a dyn Host,
    cni_mode: bool,
    dry_run: bool,
    clean: bool,
}

impl GroupNames<'_> {
    fn resolve(
        &self,
        list: Vec<Group>,
        origin: &Origin,
        text: &str,
    ) -> Result<Vec<Group>, ConfigError> {
        list.into_iter()
            .map(|g| match g {
                Group::Name(n) if self.cni_mode => Err(ConfigError::Invalid {
                    origin: origin.clone(),
                    value: text.to_string(),
                    problem: format!(
                        "names group {:?}: in CNI mode owner groups are numeric gids only (the host's /etc/group is not the pod's)",
                        n.as_str()
                    ),
                }),
                Group::Name(n) if !self.dry_run => match self.host.lookup_gid(n.as_str()) {
                    Some(id) => Ok(Group::Id(id)),
                    None if self.clean => Ok(Group::Name(n)),
                    None => Err(ConfigError::UnknownGroup {
                        origin: origin.clone(),
                        name: n.as_str().to_string(),
                    }),
                },
                g => Ok(g),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostError;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A host with one group file that records every file read.
    #[derive(Default)]
    struct Recording {
        reads: Mutex<Vec<String>>,
    }

    impl Host for Recording {
        fn interface_addrs(&self) -> Result<Vec<IpAddr>, HostError> {
            Ok(vec!["10.0.0.5".parse().unwrap()])
        }
        fn read_file(&self, path: &str) -> Result<String, HostError> {
            self.reads.lock().unwrap().push(path.into());
            Ok("java:x:1234:\n".into())
        }
    }

    fn flags(args: &[(&str, &str)]) -> Flags {
        let mut f = Flags::default();
        for (k, v) in args {
            let spec = flags::by_long(k).unwrap_or_else(|| panic!("{k} is a flag"));
            f.set(spec, v.to_string());
        }
        f
    }

    fn resolve_as(
        f: &Flags,
        sub: Subcommand,
        env: &HashMap<String, String>,
        host: &dyn Host,
    ) -> Result<Resolved, ConfigError> {
        resolve(f, &early(f, sub, env)?, env, host)
    }

    #[test]
    fn cni_mode_refuses_group_names_without_reading_a_file() {
        let host = Recording::default();
        let f = flags(&[
            ("proxy-uid", "1337"),
            ("cni-mode", "true"),
            ("outbound-owner-groups", "1000,java"),
        ]);
        let err = resolve_as(&f, Subcommand::Apply, &HashMap::new(), &host).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("--outbound-owner-groups"), "{err}");
        assert!(err.to_string().contains("numeric gids only"), "{err}");
        assert!(host.reads.lock().unwrap().is_empty(), "no file read");
    }

    #[test]
    fn group_names_become_gids_once_unless_dry_run() {
        let host = Recording::default();
        let f = flags(&[
            ("proxy-uid", "1337"),
            ("outbound-owner-groups-exclude", "java,7"),
        ]);
        let r = resolve_as(&f, Subcommand::Apply, &HashMap::new(), &host).unwrap();
        assert_eq!(
            r.policy.owner_groups_exclude,
            [Group::Id(1234), Group::Id(7)]
        );
        let mut dry = f.clone();
        dry.set(&flags::DRY_RUN.spec, "true");
        let r = resolve_as(&dry, Subcommand::Apply, &HashMap::new(), &host).unwrap();
        assert!(
            matches!(&r.policy.owner_groups_exclude[0], Group::Name(n) if n.as_str() == "java")
        );
        let unknown = flags(&[
            ("proxy-uid", "1337"),
            ("outbound-owner-groups-exclude", "ftp"),
        ]);
        let err = resolve_as(&unknown, Subcommand::Apply, &HashMap::new(), &host).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownGroup { .. }), "{err}");
        // A clean does not fail on a name it cannot resolve.
        assert!(resolve_as(&unknown, Subcommand::Clean, &HashMap::new(), &host).is_ok());
    }

    #[test]
    fn the_action_is_decided_once_from_the_subcommand_and_cleanup_only() {
        let env: HashMap<String, String> =
            [("CLEANUP_ONLY".to_string(), "true".to_string())].into();
        let plain = flags(&[]);
        fn verb(
            f: &Flags,
            sub: Subcommand,
            env: &HashMap<String, String>,
        ) -> Result<Verb, ConfigError> {
            early(f, sub, env).map(|e| e.action.verb)
        }
        assert_eq!(
            verb(&plain, Subcommand::Apply, &HashMap::new()).unwrap(),
            Verb::Apply
        );
        assert_eq!(
            verb(&plain, Subcommand::Clean, &HashMap::new()).unwrap(),
            Verb::Clean
        );
        assert_eq!(verb(&plain, Subcommand::Apply, &env).unwrap(), Verb::Clean);
        let flag = flags(&[("cleanup-only", "true")]);
        assert_eq!(
            verb(&flag, Subcommand::Apply, &HashMap::new()).unwrap(),
            Verb::Clean
        );
        let err = verb(&plain, Subcommand::Check, &env).unwrap_err();
        assert!(err.to_string().contains("env CLEANUP_ONLY"), "{err}");
        // An empty variable is unset.
        let empty: HashMap<String, String> = [("CLEANUP_ONLY".to_string(), String::new())].into();
        assert_eq!(
            verb(&plain, Subcommand::Apply, &empty).unwrap(),
            Verb::Apply
        );
    }

    #[test]
    fn precedence_is_flag_then_later_env_then_earlier_env_then_default() {
        let host = Recording::default();
        let both: HashMap<String, String> = [
            ("REDIRECT_DNS".to_string(), "false".to_string()),
            ("ISTIO_META_DNS_CAPTURE".to_string(), "true".to_string()),
            ("CAPTURE_ALL_DNS".to_string(), "true".to_string()),
        ]
        .into();
        let f = flags(&[("proxy-uid", "1337")]);
        let r = resolve_as(&f, Subcommand::Apply, &both, &host).unwrap();
        assert_eq!(
            r.policy.dns,
            Dns::All,
            "ISTIO_META_DNS_CAPTURE wins over REDIRECT_DNS"
        );
        let f = flags(&[("proxy-uid", "1337"), ("redirect-dns", "false")]);
        let r = resolve_as(&f, Subcommand::Apply, &both, &host).unwrap();
        assert_eq!(r.policy.dns, Dns::Off, "the flag wins");
        let r = resolve_as(
            &flags(&[("proxy-uid", "7")]),
            Subcommand::Apply,
            &HashMap::new(),
            &host,
        )
        .unwrap();
        assert_eq!(
            r.policy.proxy_gids,
            [Group::Id(7)],
            "-g defaults to the text of -u"
        );
        assert_eq!(r.policy.tproxy_mark.get(), 1337);
    }

    #[test]
    fn an_empty_variable_is_unset_and_the_next_one_down_decides() {
        let host = Recording::default();
        let env: HashMap<String, String> = [
            ("INBOUND_CAPTURE_PORT", ""),
            ("ISTIO_INBOUND_TPROXY_MARK", ""),
            ("REDIRECT_DNS", "true"),
            ("ISTIO_META_DNS_CAPTURE", ""),
            ("CAPTURE_ALL_DNS", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = flags(&[("proxy-uid", "1337")]);
        let r = resolve_as(&f, Subcommand::Apply, &env, &host).unwrap();
        assert_eq!(r.policy.inbound_capture_port.get(), 15006, "the default");
        assert_eq!(r.policy.tproxy_mark.get(), 1337, "the default");
        assert_eq!(
            r.policy.dns,
            Dns::All,
            "an empty ISTIO_META_DNS_CAPTURE leaves REDIRECT_DNS to decide"
        );
    }
}
