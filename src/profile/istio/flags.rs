//! Istio's flag table (`ALL`): upstream's flags, names, shorthands, variables and defaults,
//! and ours. From it come the CLI's subcommands (`subcommand`), the keys the CNI
//! configuration accepts (`by_long`), the pod semantics' annotation map (`cni::pod`), and the
//! README's flag and pod-field tables (`markdown_table`, `pod_table`; a test keeps the README
//! equal to them).

use std::net::IpAddr;
use std::time::Duration;

use clap::{ArgMatches, Command};

use crate::flags::{Flag, Flags, PodField, Spec, arg, boolean, rows, table, value};
use crate::values as v;

const NOT_ASKED: &str = "the plugin is invoked to change the pod";

table! {
    ALL:
    ENVOY_PORT: v::Port = v::port, value("envoy-port", Some('p'), &[], Some("15001"), "port",
        "Port to which all outbound TCP traffic is redirected (Envoy). No env var, as upstream.");
    INBOUND_CAPTURE_PORT: v::Port = v::port, value("inbound-capture-port", Some('z'), &["INBOUND_CAPTURE_PORT"], Some("15006"), "port",
        "Port to which inbound TCP traffic is redirected.");
    INBOUND_TUNNEL_PORT: v::Port = v::port, value("inbound-tunnel-port", Some('e'), &["INBOUND_TUNNEL_PORT"], Some("15008"), "port",
        "Istio tunnel (HBONE) port, never redirected.");
    PROXY_UID: Vec<v::Uid> = v::uids, value("proxy-uid", Some('u'), &["PROXY_UID"], None, "uids, comma separated",
        "UIDs whose traffic is not redirected (the proxy's).")
        .doc("uid of `$ENVOY_USER` (istio-proxy) in /etc/passwd, else 1337")
        .pod(PodField::SecurityContext("runAsUser"), Some("1337"));
    PROXY_GID: Vec<v::Group> = v::gids, value("proxy-gid", Some('g'), &["PROXY_GID"], None, "gids, comma separated",
        "GIDs whose traffic is not redirected.")
        .doc("the `-u` value")
        .pod(PodField::SecurityContext("runAsGroup"), Some("1337"));
    INTERCEPTION_MODE: v::InterceptMode = v::intercept_mode, value("istio-inbound-interception-mode", Some('m'), &["ISTIO_INBOUND_INTERCEPTION_MODE"], Some(""), "`REDIRECT` or `TPROXY`",
        "Inbound interception mode.")
        .doc("REDIRECT")
        .pod(PodField::Annotation(&["sidecar.istio.io/interceptionMode"]), Some("REDIRECT"));
    INBOUND_PORTS: v::InboundPorts = v::inbound_ports, value("istio-inbound-ports", Some('b'), &["ISTIO_INBOUND_PORTS"], Some(""), "`*` or ports",
        "Inbound ports to redirect, or \"*\" for all; empty disables inbound capture.")
        .doc("(none: no inbound capture)")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/includeInboundPorts"]), Some("*"));
    LOCAL_EXCLUDE_PORTS: Vec<v::Port> = v::ports, value("istio-local-exclude-ports", Some('d'), &["ISTIO_LOCAL_EXCLUDE_PORTS"], Some(""), "ports",
        "Inbound ports excluded when -b is \"*\".")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/excludeInboundPorts"]), Some("15020"));
    EXCLUDE_INTERFACES: Vec<v::IfName> = v::interfaces, value("istio-exclude-interfaces", Some('c'), &["ISTIO_EXCLUDE_INTERFACES"], Some(""), "interfaces",
        "Interfaces whose traffic is never captured.")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/excludeInterfaces"]), None);
    SERVICE_CIDR: v::Cidrs = v::include_cidrs, value("istio-service-cidr", Some('i'), &["ISTIO_SERVICE_CIDR"], Some(""), "`*` or CIDRs",
        "Outbound CIDRs to redirect, or \"*\" for all; empty disables outbound capture.")
        .doc("(none: no outbound capture)")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/includeOutboundIPRanges"]), Some("*"));
    SERVICE_EXCLUDE_CIDR: v::Cidrs = v::exclude_cidrs, value("istio-service-exclude-cidr", Some('x'), &["ISTIO_SERVICE_EXCLUDE_CIDR"], Some(""), "CIDRs",
        "Outbound CIDRs excluded from redirection.")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/excludeOutboundIPRanges"]), None);
    OUTBOUND_PORTS: Vec<v::Port> = v::ports, value("istio-outbound-ports", Some('q'), &["ISTIO_OUTBOUND_PORTS"], Some(""), "ports",
        "Outbound ports always redirected.")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/includeOutboundPorts"]), None);
    OUTBOUND_PORTS_EXCLUDE: Vec<v::Port> = v::ports, value("istio-local-outbound-ports-exclude", Some('o'), &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"], Some(""), "ports",
        "Outbound ports never redirected.")
        .pod(PodField::Annotation(&["traffic.sidecar.istio.io/excludeOutboundPorts"]), Some("15020"));
    KUBE_VIRT_INTERFACES: Vec<v::IfName> = v::interfaces, value("kube-virt-interfaces", Some('k'), &["KUBE_VIRT_INTERFACES"], Some(""), "interfaces",
        "Virtual interfaces whose inbound traffic is treated as outbound.")
        .pod(PodField::Annotation(&["istio.io/reroute-virtual-interfaces", "traffic.sidecar.istio.io/kubevirtInterfaces"]), None);
    TPROXY_MARK: v::Mark = v::mark, value("istio-inbound-tproxy-mark", Some('t'), &["ISTIO_INBOUND_TPROXY_MARK"], Some("1337"), "mark (decimal or 0x hex)",
        "Packet mark used by TPROXY inbound capture.");
    TPROXY_ROUTE_TABLE: v::RouteTable = v::route_table, value("istio-inbound-tproxy-route-table", Some('r'), &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"], Some("133"), "table id (not 253-255)",
        "Routing table used by TPROXY inbound capture.");
    DRY_RUN: bool = v::boolean, boolean("dry-run", Some('n'), &["DRY_RUN"],
        "Print what would be done; touch nothing.")
        .not_in_cni(NOT_ASKED);
    PROBE_PORT: v::Port = v::port, value("iptables-probe-port", None, &["IPTABLES_PROBE_PORT"], Some("15002"), "port",
        "Listen port of the validation probe.");
    PROBE_TIMEOUT: Duration = v::duration, value("probe-timeout", None, &["PROBE_TIMEOUT"], Some("5s"), "Go duration",
        "Validation timeout.");
    SKIP_RULE_APPLY: bool = v::boolean, boolean("skip-rule-apply", None, &["SKIP_RULE_APPLY"],
        "Do not apply rules.")
        .not_in_cni(NOT_ASKED);
    RUN_VALIDATION: bool = v::boolean, boolean("run-validation", None, &["RUN_VALIDATION"],
        "Check that redirection works after applying (exit 126 if not).")
        .not_in_cni("validation runs inside the pod (Istio's istio-validation init container)");
    REDIRECT_DNS: bool = v::boolean, boolean("redirect-dns", None, &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
        "Capture DNS to the agent's DNS proxy (15053).")
        .pod(PodField::ProxyEnv("ISTIO_META_DNS_CAPTURE"), None);
    DROP_INVALID: bool = v::boolean, boolean("drop-invalid", None, &["DROP_INVALID", "INVALID_DROP"],
        "Drop packets in conntrack state INVALID.")
        .pod(PodField::ProxyEnv("INVALID_DROP"), None);
    DUAL_STACK: bool = v::boolean, boolean("dual-stack", None, &["DUAL_STACK", "ISTIO_DUAL_STACK"],
        "Dual-stack: any IPv6 address turns IPv6 rules on.")
        .pod(PodField::ProxyEnv("ISTIO_DUAL_STACK"), None);
    CAPTURE_ALL_DNS: bool = v::boolean, boolean("capture-all-dns", None, &["CAPTURE_ALL_DNS"],
        "Capture all port-53 traffic, not only to the configured resolvers.")
        .pod(PodField::ProxyEnv("ISTIO_META_DNS_CAPTURE"), None);
    NETWORK_NAMESPACE: String = v::path, value("network-namespace", None, &["NETWORK_NAMESPACE"], Some(""), "path; meshtables enters it (upstream only uses it as a lock file)",
        "Network namespace (path) to program.")
        .not_in_cni("the plugin programs the namespace in CNI_NETNS");
    CNI_MODE: bool = v::boolean, boolean("cni-mode", None, &["CNI_MODE"],
        "Run as invoked by a CNI plugin: numeric owner ids only, a per-namespace xtables lock.")
        .not_in_cni("it is always on in the plugin");
    RECONCILE: bool = v::boolean, boolean("reconcile", None, &["RECONCILE"],
        "Replace pre-existing, different rules instead of failing.");
    CLEANUP_ONLY: bool = v::boolean, boolean("cleanup-only", None, &["CLEANUP_ONLY"],
        "Only remove rules (upstream's clean command).")
        .not_in_cni("DEL cleans");
    FORCE_APPLY: bool = v::boolean, boolean("force-apply", None, &["FORCE_APPLY"],
        "Apply even if the rules appear to be in place.");
    NATIVE_NFTABLES: bool = v::boolean, boolean("native-nftables", None, &["NATIVE_NFTABLES"],
        "Use native nftables (netlink) instead of the iptables binaries.");
    COMPACT: bool = v::boolean, boolean("compact", None, &["COMPACT"],
        "Compact rulesets: each port or CIDR list is one rule with a set (nftables) or multiport rules of up to 15 ports (iptables), instead of one rule per item. Same interception; not byte-identical to upstream.")
        .ours();
    FORCE_IPTABLES_BINARY: Option<v::XtablesVariant> = v::variant, value("force-iptables-binary", None, &["FORCE_IPTABLES_BINARY"], Some(""), "`legacy` or `nft`",
        "Force the iptables variant.")
        .doc("(detect)");
    LOG_OUTPUT_LEVEL: crate::logging::Level = v::log_level, value("log_output_level", None, &[], Some("info"), "upstream's log level: `LEVEL` or `SCOPE:LEVEL,...`",
        "Log level (debug, info, warn, error, none); scopes other than default/all are ignored.");
    LOG_AS_JSON: bool = v::boolean, boolean("log_as_json", None, &[],
        "Log as JSON lines.");
    LOG_TARGET: String = v::anything, value("log_target", None, &[], Some(""), "accepted, ignored: logs always go to stderr",
        "Accepted for compatibility; logs always go to stderr.");
    LOG_CALLER: String = v::anything, value("log_caller", None, &[], Some(""), "accepted, ignored",
        "Accepted for compatibility; ignored.");
    LOG_STACKTRACE_LEVEL: String = v::anything, value("log_stacktrace_level", None, &[], Some(""), "accepted, ignored",
        "Accepted for compatibility; ignored.");
    ENABLE_IPV6: v::Ipv6Setting = v::ipv6_setting, value("enable-ipv6", None, &["ENABLE_IPV6"], Some("auto"), "`auto` (upstream's detection from interface addresses), `true`, `false`",
        "IPv6 rules: auto (detect from interface addresses, as upstream), true or false.")
        .ours();
    DNS_SERVERS: Vec<IpAddr> = v::addresses, value("dns-servers", None, &["DNS_SERVERS"], None, "addresses; the flag given, even empty, means resolv.conf is not read (an empty `DNS_SERVERS` is unset)",
        "DNS servers to capture; the flag given (even empty) means resolv.conf is not read; an empty DNS_SERVERS is unset.")
        .doc("(read resolv.conf)")
        .ours();
    RESOLV_CONF: String = v::path, value("resolv-conf", None, &["RESOLV_CONF"], Some("/etc/resolv.conf"), "path",
        "resolv.conf to read DNS servers from.")
        .ours()
        .not_in_cni("the host's files are not the pod's; give dns-servers or capture-all-dns");
    OWNER_GROUPS: v::OwnerGroups = v::owner_groups, value("outbound-owner-groups", None, &["ISTIO_OUTBOUND_OWNER_GROUPS", "OUTBOUND_OWNER_GROUPS"], Some("*"), "`*` or groups (names or gids, at most 64)",
        "Groups whose outbound traffic is captured (\"*\" = all).")
        .ours();
    OWNER_GROUPS_EXCLUDE: Vec<v::Group> = v::groups, value("outbound-owner-groups-exclude", None, &["ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "OUTBOUND_OWNER_GROUPS_EXCLUDE"], Some(""), "groups",
        "Groups whose outbound traffic is not captured.")
        .ours();
    IPV4_LOOPBACK_CIDR: v::Cidr = v::loopback_cidr, value("ipv4-loopback-cidr", None, &["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "IPV4_LOOPBACK_CIDR"], Some("127.0.0.1/32"), "IPv4 loopback CIDR, /8 to /32",
        "The IPv4 loopback CIDR.")
        .ours();
    OUTPUT: v::OutputFormat = v::output_format, value("output", None, &[], Some("text"), "`text` or `json` (dry-run output)",
        "Dry-run output: text (restore or nft text) or json (the plan).")
        .ours()
        .not_in_cni("the plugin prints CNI results");
}

/// The spec of a long name, as the CNI configuration spells settings.
pub fn by_long(long: &str) -> Option<&'static Spec> {
    ALL.iter().copied().find(|s| s.long == long)
}

/// The flags of this table given on the command line in `matches`.
pub fn from_matches(m: &ArgMatches) -> Flags {
    Flags::from_matches_of(m, ALL)
}

/// The subcommands and what they do.
pub const SUBCOMMANDS: [(&str, Option<&str>, &str); 3] = [
    (
        "apply",
        Some("istio-iptables"),
        "Install the interception rules (upstream's `istio-iptables`).",
    ),
    (
        "clean",
        Some("istio-clean-iptables"),
        "Remove everything of ours (upstream's `istio-clean-iptables` / `--cleanup-only`).",
    ),
    (
        "check",
        None,
        "Exit 0 when the live rules are exactly those these flags install, else 1 and what differs.",
    ),
];

/// A subcommand (`apply`, `clean`, `check`) taking every flag of the table.
pub fn subcommand(name: &'static str, alias: Option<&'static str>, about: &'static str) -> Command {
    let mut sub = Command::new(name)
        .about(about)
        .args(ALL.iter().copied().map(arg))
        .args_override_self(true);
    if let Some(a) = alias {
        sub = sub.alias(a);
    }
    sub
}

/// The README's flag table, generated from `ALL`.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| | flag | env (later wins) | default | value |\n|---|---|---|---|---|\n");
    rows(ALL, &mut out);
    out
}

/// The README's table of settings istio-cni takes from the pod, generated from `ALL`.
pub fn pod_table() -> String {
    let mut out = String::from("| pod field | setting | istio-cni's default |\n|---|---|---|\n");
    for s in ALL {
        let Some(p) = &s.pod else { continue };
        let field = match p.field {
            PodField::Annotation(keys) => {
                keys.iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(" (else ")
                    + &")".repeat(keys.len() - 1)
            }
            PodField::SecurityContext(f) => {
                format!("`istio-proxy` securityContext `{f}` (non-zero)")
            }
            PodField::ProxyEnv(e) => format!("`istio-proxy` env `{e}`"),
        };
        out.push_str(&format!(
            "| {field} | `{}` | {} |\n",
            s.long,
            p.istio_cni_default.unwrap_or("")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::help;

    #[test]
    fn names_shorthands_and_variables_are_unique() {
        let mut longs: Vec<&str> = ALL.iter().map(|s| s.long).collect();
        longs.sort();
        longs.dedup();
        assert_eq!(longs.len(), ALL.len());
        let mut shorts: Vec<char> = ALL.iter().filter_map(|s| s.short).collect();
        let n = shorts.len();
        shorts.sort();
        shorts.dedup();
        assert_eq!(shorts.len(), n);
        let mut envs: Vec<&str> = ALL.iter().flat_map(|s| s.envs.iter().copied()).collect();
        let n = envs.len();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), n, "a variable feeds one flag");
    }

    #[test]
    fn every_default_parses_with_its_flag() {
        // A default is text a user could type, parsed like a given value.
        macro_rules! parses {
            ($($f:ident),*) => {$(
                if let Some(d) = $f.spec.default {
                    assert!(($f.parse)(d).is_ok(), "default of --{} is {:?}", $f.spec.long, d);
                }
            )*};
        }
        parses!(
            ENVOY_PORT,
            INBOUND_CAPTURE_PORT,
            INBOUND_TUNNEL_PORT,
            INTERCEPTION_MODE,
            INBOUND_PORTS,
            LOCAL_EXCLUDE_PORTS,
            EXCLUDE_INTERFACES,
            SERVICE_CIDR,
            OUTBOUND_PORTS,
            OUTBOUND_PORTS_EXCLUDE,
            KUBE_VIRT_INTERFACES,
            TPROXY_MARK,
            TPROXY_ROUTE_TABLE,
            DRY_RUN,
            PROBE_PORT,
            PROBE_TIMEOUT,
            ENABLE_IPV6,
            OWNER_GROUPS,
            OWNER_GROUPS_EXCLUDE,
            IPV4_LOOPBACK_CIDR,
            OUTPUT,
            FORCE_IPTABLES_BINARY,
            LOG_OUTPUT_LEVEL,
            NATIVE_NFTABLES
        );
    }

    #[test]
    fn help_states_the_precedence_the_resolver_applies() {
        // Later variables win; the help says which.
        let h = help(&OWNER_GROUPS.spec);
        assert!(
            h.contains("Env ISTIO_OUTBOUND_OWNER_GROUPS, OUTBOUND_OWNER_GROUPS (OUTBOUND_OWNER_GROUPS wins)"),
            "{h}"
        );
        let h = help(&REDIRECT_DNS.spec);
        assert!(h.contains("(ISTIO_META_DNS_CAPTURE wins)"), "{h}");
        assert!(help(&ENVOY_PORT.spec).contains("No env var"));
    }

    #[test]
    fn the_command_parses_pflag_syntax() {
        let m = Command::new("meshtables")
            .subcommand(subcommand("apply", Some("istio-iptables"), ""))
            .try_get_matches_from([
                "meshtables",
                "istio-iptables",
                "-p15001",
                "-z=15006",
                "--dry-run",
                "-x",
                "-1",
                "-n=false",
            ])
            .unwrap();
        let (_, sub) = m.subcommand().unwrap();
        let f = from_matches(sub);
        assert_eq!(f.get(&ENVOY_PORT.spec), Some("15001"));
        assert_eq!(f.get(&INBOUND_CAPTURE_PORT.spec), Some("15006"));
        assert_eq!(
            f.get(&SERVICE_EXCLUDE_CIDR.spec),
            Some("-1"),
            "a value may start with '-'"
        );
        assert_eq!(f.get(&DRY_RUN.spec), Some("false"), "the last one wins");
        assert!(!f.is_set(&PROXY_UID.spec));
    }
}
