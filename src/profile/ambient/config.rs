//! Flags + environment + the pod's loopback → what to do (`Early`, from the subcommand alone),
//! how (`RunOptions`) and the in-pod `Policy`, each decided here once. Every value comes from
//! the flag table (`flags`) through the generic resolver (`resolve`): upstream's precedence,
//! and an error that names the flag or variable, the value and what is expected. A value a
//! pod annotation carries (a node agent maps the annotation to its flag) is checked like any
//! other, and its error names the annotation too; upstream ignores a bad annotation value.

use std::path::PathBuf;

use super::flags;
use super::policy::{Policy, Ports};
use crate::flags::{Flag, Flags};
use crate::host::Host;
use crate::options::{Action, BackendChoice, Early, RunOptions, Subcommand, Verb};
pub use crate::resolve::{ConfigError, EnvSource};
use crate::resolve::{Raw, Resolver, invalid};

/// A resolved configuration of the ambient flags.
pub type Resolved = crate::options::Resolved<Policy>;

/// Where the kernel says whether `lo` has IPv6 (per network namespace, read inside it).
const LO_DISABLE_IPV6: &str = "/proc/sys/net/ipv6/conf/lo/disable_ipv6";

/// What to do: the subcommand's verb (a clean is `clean`; there is no `--cleanup-only`), for
/// real or as a dry run, and where.
pub fn early(flags: &Flags, sub: Subcommand, env: &dyn EnvSource) -> Result<Early, ConfigError> {
    let r = Resolver::new(flags, env);
    let verb = match sub {
        Subcommand::Apply => Verb::Apply,
        Subcommand::Clean => Verb::Clean,
        Subcommand::Check => Verb::Check,
    };
    let ns = r.get(&flags::NETWORK_NAMESPACE)?;
    Ok(Early {
        action: Action {
            verb,
            dry_run: r.get(&flags::DRY_RUN)?,
        },
        network_namespace: (!ns.trim().is_empty()).then(|| PathBuf::from(ns)),
        cni_mode: false,
    })
}

/// A pod-level flag: as any other, and a bad value's error says which annotation sets it.
fn pod<T>(r: &Resolver, f: &'static Flag<T>) -> Result<T, ConfigError> {
    r.get(f)
        .map_err(|e| match (e, flags::annotation_of(&f.spec)) {
            (
                ConfigError::Invalid {
                    origin,
                    value,
                    problem,
                },
                Some(a),
            ) => ConfigError::Invalid {
                origin,
                value,
                problem: format!("{problem} (the pod annotation {a} sets this flag)"),
            },
            (e, _) => e,
        })
}

/// The error for two flags that must differ and do not.
fn clash(
    r: &Resolver,
    a: &'static crate::flags::Spec,
    b: &'static crate::flags::Spec,
    why: &str,
) -> ConfigError {
    let raw = r.raw(b).unwrap_or(Raw {
        value: b.default.unwrap_or("").to_string(),
        origin: r.origin(b),
    });
    invalid(
        raw,
        format!("is also the value of --{} ({}); {why}", a.long, r.origin(a)),
    )
}

/// ztunnel's four ports, each different from the others (a port doing two jobs would send
/// traffic to the wrong listener or exempt what should be captured).
fn ports(r: &Resolver) -> Result<Ports, ConfigError> {
    let p = Ports {
        outbound: r.get(&flags::OUTBOUND_PORT)?,
        inbound_plaintext: r.get(&flags::INBOUND_PLAINTEXT_PORT)?,
        inbound: r.get(&flags::INBOUND_PORT)?,
        dns: r.get(&flags::DNS_PORT)?,
    };
    let all = [
        (&flags::OUTBOUND_PORT.spec, p.outbound),
        (&flags::INBOUND_PLAINTEXT_PORT.spec, p.inbound_plaintext),
        (&flags::INBOUND_PORT.spec, p.inbound),
        (&flags::DNS_PORT.spec, p.dns),
    ];
    for (i, (a, pa)) in all.iter().enumerate() {
        if let Some((b, _)) = all[i + 1..].iter().find(|(_, pb)| pb == pa) {
            return Err(clash(r, a, b, "expected ztunnel's four ports to differ"));
        }
    }
    Ok(p)
}

/// Resolves flags, environment and the pod's loopback for the action `early` decided.
pub fn resolve(
    flags: &Flags,
    early: &Early,
    env: &dyn EnvSource,
    host: &dyn Host,
) -> Result<Resolved, ConfigError> {
    let r = Resolver::new(flags, env);
    let mut warnings = Vec::new();
    let node_dns = r.get(&flags::DNS_CAPTURE)?;
    let ipv6 = r.get(&flags::IPV6)?;
    let ztunnel_mark = r.get(&flags::ZTUNNEL_MARK)?;
    let connmark = r.get(&flags::CONNMARK)?;
    // A packet with exactly one of the marks must not count as carrying the other: ztunnel's
    // own traffic would be taken for a connmarked reply, or the reverse.
    if connmark.matches(ztunnel_mark.value()) || ztunnel_mark.matches(connmark.value()) {
        return Err(clash(
            &r,
            &flags::ZTUNNEL_MARK.spec,
            &flags::CONNMARK.spec,
            "expected marks that do not match each other under their masks",
        ));
    }
    let policy = Policy {
        ports: ports(&r)?,
        ztunnel_mark,
        connmark,
        route_table: r.get(&flags::ROUTE_TABLE)?,
        rule_priority: r.get(&flags::RULE_PRIORITY)?,
        probe_v4: r.get(&flags::PROBE_SNAT_IP)?,
        probe_v6: r.get(&flags::PROBE_SNAT_IPV6)?,
        ipv6,
        ipv6_routing: ipv6 && loopback_has_ipv6(host, &mut warnings),
        dns: pod(&r, &flags::POD_DNS_CAPTURE)?.unwrap_or(node_dns),
        ingress: pod(&r, &flags::BYPASS_INBOUND)?,
        virtual_interfaces: pod(&r, &flags::VIRTUAL_INTERFACES)?,
    };
    let backend = match r.get(&flags::NATIVE_NFTABLES)? {
        true => BackendChoice::Netlink,
        false => BackendChoice::Iptables(r.get(&flags::FORCE_IPTABLES_BINARY)?),
    };
    let run = RunOptions {
        backend,
        network_namespace: early.network_namespace.clone(),
        cni_mode: false,
        reconcile: r.get(&flags::RECONCILE)?,
        force_apply: false,
        skip_rule_apply: false,
        validation: None,
        output: r.get(&flags::OUTPUT)?,
        log_level: r.get(&flags::LOG_OUTPUT_LEVEL)?,
        log_json: r.get(&flags::LOG_AS_JSON)?,
    };
    Ok(Resolved {
        action: early.action,
        run,
        policy,
        warnings,
    })
}

/// Whether the pod's `lo` has IPv6, as upstream decides it before adding the IPv6 route:
/// unless the kernel says `disable_ipv6` is 1 (an unreadable answer is taken as yes, as
/// upstream does, and the route then fails if it cannot go in).
fn loopback_has_ipv6(host: &dyn Host, warnings: &mut Vec<String>) -> bool {
    match host.read_file(LO_DISABLE_IPV6) {
        Ok(v) if v.trim() == "1" => {
            warnings.push(format!(
                "IPv6 is on, but the loopback interface has IPv6 disabled ({LO_DISABLE_IPV6} is 1): no IPv6 policy routing, as upstream"
            ));
            false
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostError;
    use std::collections::HashMap;

    /// A pod whose `lo` has IPv6 or not.
    struct Pod(bool);

    impl Host for Pod {
        fn interface_addrs(&self) -> Result<Vec<std::net::IpAddr>, HostError> {
            Ok(Vec::new())
        }
        fn read_file(&self, path: &str) -> Result<String, HostError> {
            assert_eq!(path, LO_DISABLE_IPV6);
            Ok(if self.0 { "0\n" } else { "1\n" }.into())
        }
    }

    fn flags(args: &[(&str, &str)]) -> Flags {
        let mut f = Flags::default();
        for (k, v) in args {
            f.set(flags::by_long(k).expect("a flag"), v.to_string());
        }
        f
    }

    fn resolve_with(
        args: &[(&str, &str)],
        env: &[(&str, &str)],
        lo_v6: bool,
    ) -> Result<Resolved, ConfigError> {
        let f = flags(args);
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(&f, &early(&f, Subcommand::Apply, &env)?, &env, &Pod(lo_v6))
    }

    #[test]
    fn the_pod_decides_dns_over_the_node() {
        let on = [("AMBIENT_DNS_CAPTURE", "true")];
        assert!(resolve_with(&[], &on, true).unwrap().policy.dns);
        assert!(
            !resolve_with(&[("pod-dns-capture", "false")], &on, true)
                .unwrap()
                .policy
                .dns
        );
        assert!(
            resolve_with(&[("pod-dns-capture", "true")], &[], true)
                .unwrap()
                .policy
                .dns
        );
        assert!(
            !resolve_with(&[("pod-dns-capture", "")], &[], true)
                .unwrap()
                .policy
                .dns
        );
    }

    #[test]
    fn a_bad_pod_value_names_the_flag_and_the_annotation() {
        let e = resolve_with(&[("pod-dns-capture", "tweedledum")], &[], true).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("--pod-dns-capture") && s.contains("\"tweedledum\""),
            "{s}"
        );
        assert!(s.contains("ambient.istio.io/dns-capture"), "{s}");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn ports_and_marks_must_not_collide() {
        let e = resolve_with(&[("dns-capture-port", "15001")], &[], true).unwrap_err();
        assert!(
            e.to_string().contains("--dns-capture-port")
                && e.to_string().contains("--ztunnel-outbound-port"),
            "{e}"
        );
        let e = resolve_with(&[("connmark", "0x539/0xfff")], &[], true).unwrap_err();
        assert!(
            e.to_string().contains("--connmark") && e.to_string().contains("--ztunnel-mark"),
            "{e}"
        );
        assert!(resolve_with(&[("connmark", "0x1000/0xf000")], &[], true).is_ok());
    }

    #[test]
    fn ipv6_routing_follows_the_loopback() {
        let on = [("AMBIENT_IPV6", "true")];
        let r = resolve_with(&[], &on, false).unwrap();
        assert!(r.policy.ipv6 && !r.policy.ipv6_routing);
        assert_eq!(r.warnings.len(), 1);
        assert!(resolve_with(&[], &on, true).unwrap().policy.ipv6_routing);
    }
}
