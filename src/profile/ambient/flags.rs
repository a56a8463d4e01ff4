//! Istio ambient's flag table (`ALL`): the node agent's settings under upstream's names
//! (`AMBIENT_DNS_CAPTURE`, `AMBIENT_IPV6`, `HOST_PROBE_SNAT_IP`, `HOST_PROBE_SNAT_IPV6`, the
//! backend's `NATIVE_NFTABLES` and `FORCE_IPTABLES_BINARY`), the constants upstream compiles in
//! (ztunnel's ports, the marks, the routing table and rule preference) as flags with its
//! values as defaults, and the per-pod overrides upstream reads from annotations, as flags a
//! node agent sets from them. From it come the `meshtables ambient` subcommands
//! (`command`), `--help`, and the README's tables (`markdown_table`, `pod_table`).

use clap::{ArgMatches, Command};

use crate::flags::{Flag, Flags, PodField, Spec, arg, boolean, cell, rows, table, value};
use crate::values as v;

table! {
    ALL:
    DNS_CAPTURE: bool = v::boolean, boolean("ambient-dns-capture", None, &["AMBIENT_DNS_CAPTURE"],
        "Capture the pod's DNS to ztunnel's DNS proxy (the node's setting; --pod-dns-capture overrides it per pod). Upstream's chart sets it true; its binary's default is false.");
    IPV6: bool = v::boolean, boolean("ambient-ipv6", None, &["AMBIENT_IPV6"],
        "Program IPv6 rules (and IPv6 policy routing when the pod's lo has IPv6) besides IPv4. Upstream's chart sets it true; its binary's default is false.");
    PROBE_SNAT_IP: std::net::IpAddr = v::ipv4_unicast, value("host-probe-snat-ip", None, &["HOST_PROBE_SNAT_IP"], Some("169.254.7.127"), "IPv4 address",
        "The source the node's rules give the kubelet's probes (SNAT); the pod's rules let it in uncaptured.");
    PROBE_SNAT_IPV6: std::net::IpAddr = v::ipv6_unicast, value("host-probe-snat-ipv6", None, &["HOST_PROBE_SNAT_IPV6"], Some("fd16:9254:7127:1337:ffff:ffff:ffff:ffff"), "IPv6 address",
        "The IPv6 twin of --host-probe-snat-ip.");
    BYPASS_INBOUND: bool = v::boolean, boolean("bypass-inbound-capture", None, &[],
        "Ingress mode: inbound traffic is not captured, and the probe source gets no exception (the pod annotation ambient.istio.io/bypass-inbound-capture).")
        .ours()
        .pod(PodField::Annotation(&["ambient.istio.io/bypass-inbound-capture"]), Some("false"));
    POD_DNS_CAPTURE: Option<bool> = v::optional_boolean, value("pod-dns-capture", None, &[], Some(""), "`true`, `false`, or empty (unset: --ambient-dns-capture decides)",
        "This pod's DNS capture, over the node's --ambient-dns-capture (the pod annotation ambient.istio.io/dns-capture).")
        .doc("(unset)")
        .ours()
        .pod(PodField::Annotation(&["ambient.istio.io/dns-capture"]), None);
    VIRTUAL_INTERFACES: Vec<v::IfName> = v::interfaces, value("reroute-virtual-interfaces", None, &[], Some(""), "interfaces",
        "Interfaces whose inbound TCP is the pod's outbound (KubeVirt, VMs): redirected to the outbound port (the pod annotation istio.io/reroute-virtual-interfaces).")
        .ours()
        .pod(PodField::Annotation(&["istio.io/reroute-virtual-interfaces"]), None);
    OUTBOUND_PORT: v::Port = v::port, value("ztunnel-outbound-port", None, &[], Some("15001"), "port",
        "ztunnel's outbound listener: the pod's outbound TCP is redirected there (upstream's constant ZtunnelOutboundPort).")
        .ours();
    INBOUND_PLAINTEXT_PORT: v::Port = v::port, value("ztunnel-inbound-plaintext-port", None, &[], Some("15006"), "port",
        "ztunnel's inbound plaintext listener: inbound TCP is redirected there (ZtunnelInboundPlaintextPort).")
        .ours();
    INBOUND_PORT: v::Port = v::port, value("ztunnel-inbound-port", None, &[], Some("15008"), "port",
        "ztunnel's HBONE listener: inbound TCP to it is never redirected (ZtunnelInboundPort).")
        .ours();
    DNS_PORT: v::Port = v::port, value("dns-capture-port", None, &[], Some("15053"), "port",
        "ztunnel's DNS proxy: captured DNS is redirected there (DNSCapturePort).")
        .ours();
    ZTUNNEL_MARK: v::MaskedMark = v::masked_mark, value("ztunnel-mark", None, &[], Some("0x539/0xfff"), "VALUE/MASK (decimal or 0x hex)",
        "The mark ztunnel's own sockets carry (SO_MARK; ztunnel's PACKET_MARK 1337): traffic with it is never redirected (InpodMark/InpodMask).")
        .ours();
    CONNMARK: v::MaskedMark = v::masked_mark, value("connmark", None, &[], Some("0x111/0xfff"), "VALUE/MASK (decimal or 0x hex)",
        "The connection mark ztunnel's connections get, restored on the pod's replies so that policy routing returns them to ztunnel (InpodTProxyMark/InpodTProxyMask).")
        .ours();
    ROUTE_TABLE: v::RouteTable = v::route_table, value("route-table", None, &[], Some("100"), "table id (not 253-255)",
        "The routing table that delivers connmarked replies locally (RouteTableInbound).")
        .ours();
    RULE_PRIORITY: v::RulePriority = v::rule_priority, value("rule-priority", None, &[], Some("32764"), "1-32765",
        "The preference of the `ip rule fwmark CONNMARK lookup TABLE` rule (upstream's 32764).")
        .ours();
    DRY_RUN: bool = v::boolean, boolean("dry-run", None, &["DRY_RUN"],
        "Print the rules (per family, and the nft transaction with --native-nftables) in upstream's words; touch nothing.")
        .ours();
    NETWORK_NAMESPACE: String = v::path, value("network-namespace", None, &["NETWORK_NAMESPACE"], Some(""), "path (/var/run/netns/NAME, /proc/PID/ns/net)",
        "The pod's network namespace: all the work happens inside it (empty: this one).")
        .ours();
    NATIVE_NFTABLES: bool = v::boolean, boolean("native-nftables", None, &["NATIVE_NFTABLES"],
        "Native nftables over netlink (tables inet istio-ambient-nat|mangle|raw) instead of the iptables binaries.");
    FORCE_IPTABLES_BINARY: Option<v::XtablesVariant> = v::variant, value("force-iptables-binary", None, &["FORCE_IPTABLES_BINARY"], Some(""), "`legacy` or `nft`",
        "Force the iptables variant.")
        .doc("(detect)");
    RECONCILE: bool = v::boolean, boolean("reconcile", None, &["RECONCILE"],
        "Replace pre-existing, different rules of ours instead of failing (upstream's agent reconciles at start-up).")
        .ours();
    OUTPUT: v::OutputFormat = v::output_format, value("output", None, &[], Some("text"), "`text` or `json` (dry-run output)",
        "Dry-run output: text (upstream's words) or json (the plan).")
        .ours();
    LOG_OUTPUT_LEVEL: crate::logging::Level = v::log_level, value("log_output_level", None, &[], Some("info"), "upstream's log level: `LEVEL` or `SCOPE:LEVEL,...`",
        "Log level (debug, info, warn, error, none).");
    LOG_AS_JSON: bool = v::boolean, boolean("log_as_json", None, &[],
        "Log as JSON lines.");
}

/// The spec of a long name.
pub fn by_long(long: &str) -> Option<&'static Spec> {
    ALL.iter().copied().find(|s| s.long == long)
}

/// The flags of this table given on the command line in `matches`.
pub fn from_matches(m: &ArgMatches) -> Flags {
    Flags::from_matches_of(m, ALL)
}

/// The verbs under `meshtables ambient`.
pub const SUBCOMMANDS: [(&str, &str); 3] = [
    (
        "apply",
        "Install the in-pod redirection to ztunnel (upstream's AppendInpodRules, and its policy routing).",
    ),
    (
        "clean",
        "Remove everything of the ambient scheme's: its chains and the jumps to them, its nftables tables, its policy routing.",
    ),
    (
        "check",
        "Exit 0 when the live rules and routing are exactly those these flags install, else 1 and what differs.",
    ),
];

/// `meshtables ambient`: its verbs, each taking every flag of the table.
pub fn command() -> Command {
    let mut cmd = Command::new("ambient")
        .about("Istio ambient: the in-pod redirection to ztunnel that istio-cni's node agent programs in each ambient pod.")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (name, about) in SUBCOMMANDS {
        cmd = cmd.subcommand(
            Command::new(name)
                .about(about)
                .args(ALL.iter().copied().map(arg))
                .args_override_self(true),
        );
    }
    cmd
}

/// The README's flag table of `meshtables ambient`, generated from `ALL`.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| | flag | env (later wins) | default | value |\n|---|---|---|---|---|\n");
    rows(ALL, &mut out);
    out
}

/// The README's table of the pod annotations upstream reads and the flags they become.
pub fn pod_table() -> String {
    let mut out = String::from("| pod annotation | flag | when absent |\n|---|---|---|\n");
    for s in ALL {
        let Some(p) = &s.pod else { continue };
        let PodField::Annotation(keys) = p.field else {
            continue;
        };
        for k in keys {
            out.push_str(&format!(
                "| `{k}` | `--{}` | {} |\n",
                s.long,
                cell(s.default_doc.or(s.default).unwrap_or(""))
            ));
        }
    }
    out
}

/// The flag a pod annotation sets, for messages.
pub fn annotation_of(s: &Spec) -> Option<&'static str> {
    match s.pod?.field {
        PodField::Annotation(keys) => keys.first().copied(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables_are_unique_and_defaults_parse() {
        let mut longs: Vec<&str> = ALL.iter().map(|s| s.long).collect();
        longs.sort();
        longs.dedup();
        assert_eq!(longs.len(), ALL.len());
        let mut envs: Vec<&str> = ALL.iter().flat_map(|s| s.envs.iter().copied()).collect();
        let n = envs.len();
        envs.sort();
        envs.dedup();
        assert_eq!(envs.len(), n);
        macro_rules! parses {
            ($($f:ident),*) => {$(
                let d = $f.spec.default.unwrap_or("");
                assert!(($f.parse)(d).is_ok(), "default of --{} is {:?}", $f.spec.long, d);
            )*};
        }
        parses!(
            DNS_CAPTURE,
            IPV6,
            PROBE_SNAT_IP,
            PROBE_SNAT_IPV6,
            BYPASS_INBOUND,
            POD_DNS_CAPTURE,
            VIRTUAL_INTERFACES,
            OUTBOUND_PORT,
            INBOUND_PLAINTEXT_PORT,
            INBOUND_PORT,
            DNS_PORT,
            ZTUNNEL_MARK,
            CONNMARK,
            ROUTE_TABLE,
            RULE_PRIORITY,
            DRY_RUN,
            NETWORK_NAMESPACE,
            NATIVE_NFTABLES,
            FORCE_IPTABLES_BINARY,
            RECONCILE,
            OUTPUT,
            LOG_OUTPUT_LEVEL,
            LOG_AS_JSON
        );
    }

    #[test]
    fn the_annotations_upstream_reads_are_flags() {
        let keys: Vec<&str> = ALL.iter().filter_map(|s| annotation_of(s)).collect();
        assert_eq!(
            keys,
            [
                "ambient.istio.io/bypass-inbound-capture",
                "ambient.istio.io/dns-capture",
                "istio.io/reroute-virtual-interfaces"
            ]
        );
    }
}
