//! The flags of `meshtables ambient host`: the node's settings upstream's agent reads
//! (`AMBIENT_IPV6`, `HOST_PROBE_SNAT_IP`, `HOST_PROBE_SNAT_IPV6`, the backend's), the kubelet's
//! uid that upstream finds by scanning /proc (`--kubelet-uid`, found the same way when empty),
//! the namespace that plays the host, and for `add-pod`/`remove-pod` the pod's addresses and
//! its UID (the comment upstream gives each set member). The ambient table's flags are shared
//! where they mean the same (`RULES`, `MEMBERS`).

use std::net::IpAddr;

use clap::{ArgMatches, Command};

use super::super::flags as ambient;
use crate::flags::{Flag, Flags, Spec, arg, rows, table, value};
use crate::values::{self as v, Problem, Uid};

/// A pod's UID as Kubernetes makes it (an RFC 4122 UUID, lowercase hex): the comment of its
/// set members, by which a remove finds only its own.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct PodUid(String);

impl PodUid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PodUid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `8-4-4-4-12` lowercase hex digits.
pub fn pod_uid(s: &str) -> Result<Option<PodUid>, Problem> {
    if s.is_empty() {
        return Ok(None);
    }
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    let ok = groups.len() == lens.len()
        && groups.iter().zip(lens).all(|(g, n)| {
            g.len() == n
                && g.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
    if ok {
        Ok(Some(PodUid(s.to_string())))
    } else {
        Err("is not a pod UID (expected Kubernetes' lowercase UUID, 8-4-4-4-12 hex digits)".into())
    }
}

/// A pod's unicast addresses, comma separated: at most one per family, as a pod's status has
/// them (empty: none).
pub fn pod_ips(s: &str) -> Result<Vec<IpAddr>, Problem> {
    let bad = || -> Problem {
        "is not a pod's addresses (expected unicast addresses, comma separated, at most one IPv4 and one IPv6)".into()
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for item in v::items(s) {
        let a: IpAddr = item.parse().map_err(|_| bad())?;
        // An IPv4-mapped IPv6 address is its IPv4 address, as upstream unmaps it.
        let a = match a {
            IpAddr::V6(x) => x.to_ipv4_mapped().map_or(a, IpAddr::V4),
            a => a,
        };
        let unicast = match a {
            IpAddr::V4(x) => !(x.is_unspecified() || x.is_multicast() || x.is_broadcast()),
            IpAddr::V6(x) => !(x.is_unspecified() || x.is_multicast()),
        };
        if !unicast || a.is_loopback() || out.iter().any(|o| o.is_ipv4() == a.is_ipv4()) {
            return Err(bad());
        }
        out.push(a);
    }
    Ok(out)
}

/// A numeric uid, or empty for "find the kubelet's".
pub fn kubelet_uid(s: &str) -> Result<Option<Uid>, Problem> {
    match s.trim() {
        "" => Ok(None),
        t if !t.is_empty() && t.len() <= 10 && t.bytes().all(|b| b.is_ascii_digit()) => t
            .parse()
            .map(|u| Some(Uid(u)))
            .map_err(|_| "is not a uid (expected a number below 2^32)".into()),
        _ => Err(
            "is not a uid (expected a number below 2^32, or empty to find the kubelet's)".into(),
        ),
    }
}

table! {
    OWN:
    KUBELET_UID: Option<Uid> = kubelet_uid, value("kubelet-uid", None, &[], Some(""), "uid, or empty",
        "The kubelet's uid, which the nftables rule keys on (skuid): upstream finds it by scanning /proc for a kubelet, kubelite or k3s process, as meshtables does when this is empty.")
        .doc("(the kubelet's)")
        .ours();
    HOST_NAMESPACE: String = v::path, value("network-namespace", None, &["NETWORK_NAMESPACE"], Some(""), "path (/var/run/netns/NAME, /proc/PID/ns/net)",
        "The node's network namespace, where the kubelet's probes leave from (empty: this one).")
        .ours();
    POD_IPS: Vec<IpAddr> = pod_ips, value("pod-ip", None, &[], Some(""), "addresses",
        "add-pod, remove-pod: the pod's addresses (its status.podIPs), comma separated; an IPv6 one only counts with --ambient-ipv6.")
        .ours();
    POD_UID: Option<PodUid> = pod_uid, value("pod-uid", None, &[], Some(""), "pod UID",
        "add-pod, remove-pod: the pod's metadata.uid, each member's comment: a remove takes out only members with it.")
        .ours();
}

/// The flags of `host apply|clean|check`.
pub const RULES: &[&Spec] = &[
    &ambient::IPV6.spec,
    &ambient::PROBE_SNAT_IP.spec,
    &ambient::PROBE_SNAT_IPV6.spec,
    &KUBELET_UID.spec,
    &ambient::DRY_RUN.spec,
    &HOST_NAMESPACE.spec,
    &ambient::NATIVE_NFTABLES.spec,
    &ambient::FORCE_IPTABLES_BINARY.spec,
    &ambient::OUTPUT.spec,
    &ambient::LOG_OUTPUT_LEVEL.spec,
    &ambient::LOG_AS_JSON.spec,
];

/// The flags of `host add-pod|remove-pod`.
pub const MEMBERS: &[&Spec] = &[
    &POD_IPS.spec,
    &POD_UID.spec,
    &ambient::IPV6.spec,
    &ambient::DRY_RUN.spec,
    &HOST_NAMESPACE.spec,
    &ambient::NATIVE_NFTABLES.spec,
    // Accepted alike (ipsets are the same whichever iptables variant matches them).
    &ambient::FORCE_IPTABLES_BINARY.spec,
    &ambient::LOG_OUTPUT_LEVEL.spec,
    &ambient::LOG_AS_JSON.spec,
];

/// Every flag `meshtables ambient host` takes, each once.
pub fn all() -> Vec<&'static Spec> {
    let mut out: Vec<&'static Spec> = RULES.to_vec();
    for s in MEMBERS {
        if !out.iter().any(|o| std::ptr::eq(*o, *s)) {
            out.push(s);
        }
    }
    out
}

/// The verbs under `meshtables ambient host`.
pub const SUBCOMMANDS: [(&str, &str, bool); 5] = [
    (
        "apply",
        "Install the node's rules: SNAT of the kubelet's TCP to pod addresses in the probe set to the probe address (upstream's CreateHostRulesForHealthChecks), and the sets.",
        true,
    ),
    (
        "clean",
        "Remove the node's rules and the probe sets (with their members), leaving anything that is not exactly ours.",
        true,
    ),
    (
        "check",
        "Exit 0 when the node's rules and sets are in place exactly as these flags install them, else 1 and what differs.",
        true,
    ),
    (
        "add-pod",
        "Put the pod's addresses in the probe sets, each with the pod's UID as its comment (an upsert, as upstream: the address's previous pod loses it).",
        false,
    ),
    (
        "remove-pod",
        "Take the pod's addresses out of the probe sets, where they carry the pod's UID (a member of another pod's is left and reported).",
        false,
    ),
];

/// `meshtables ambient host`: its verbs and their flags.
pub fn command() -> Command {
    let mut cmd = Command::new("host")
        .about("Istio ambient: the node's rules that let the kubelet's probes reach ambient pods (SNAT to the probe address), and the probe sets' members.")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (name, about, rules) in SUBCOMMANDS {
        let specs = if rules { RULES } else { MEMBERS };
        cmd = cmd.subcommand(
            Command::new(name)
                .about(about)
                .args(specs.iter().copied().map(arg))
                .args_override_self(true),
        );
    }
    cmd
}

/// The flags given in `matches` of a verb that takes `specs` (`RULES` or `MEMBERS`).
pub fn from_matches(m: &ArgMatches, specs: &[&'static Spec]) -> Flags {
    Flags::from_matches_of(m, specs)
}

/// The README's flag table of `meshtables ambient host`.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| | flag | env (later wins) | default | value |\n|---|---|---|---|---|\n");
    rows(&all(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parses<T>(f: &Flag<T>) -> bool {
        (f.parse)(f.spec.default.unwrap_or("")).is_ok()
    }

    #[test]
    fn defaults_parse_and_names_are_unique() {
        assert!(parses(&KUBELET_UID) && parses(&HOST_NAMESPACE));
        assert!(parses(&POD_IPS) && parses(&POD_UID));
        let mut longs: Vec<&str> = all().iter().map(|s| s.long).collect();
        let n = longs.len();
        longs.sort();
        longs.dedup();
        assert_eq!(longs.len(), n);
    }

    #[test]
    fn values() {
        assert!(
            pod_uid("0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a2b")
                .unwrap()
                .is_some()
        );
        assert!(pod_uid("0B0D8F5E-3c1a-4a47-9a51-2f6c1b7f1a2b").is_err());
        assert!(pod_uid("x\" comment \"y").is_err());
        assert_eq!(
            pod_ips("::ffff:10.0.0.6,fd00::6").unwrap(),
            [
                "10.0.0.6".parse::<IpAddr>().unwrap(),
                "fd00::6".parse().unwrap()
            ]
        );
        assert!(pod_ips("10.0.0.5,10.0.0.5").is_err());
        assert!(pod_ips("10.0.0.5,10.0.0.6").is_err());
        assert!(pod_ips("10.0.0.5,fd00::5").is_ok());
        assert!(pod_ips("127.0.0.1").is_err());
        assert_eq!(kubelet_uid("0").unwrap(), Some(Uid(0)));
        assert!(kubelet_uid("4294967296").is_err());
        assert!(kubelet_uid("-1").is_err());
    }
}
