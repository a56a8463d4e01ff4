//! The flag table: every flag declared once, with everything else derived from it. A flag is a
//! `Flag<T>`: its identity (`Spec`: long name, shorthand, environment variables in precedence
//! order, default, help, whether the CNI plugin accepts it as a setting, which pod field
//! feeds it in CNI mode) and the parser that turns text into a `T` (`values`). From `ALL`
//! come the clap command (`command`), the `--help` text, the keys the CNI configuration
//! accepts, the pod semantics' annotation map (`cni::pod`), and the README's flag and
//! pod-field tables (`markdown_table`, `pod_table`; a test keeps the README equal to them).
//!
//! Raw values stay text (`Flags`) until config resolves them, so config can tell "given on
//! the command line" from "not given", apply upstream's precedence (flag > later env > earlier
//! env > default) and name the exact flag or variable in an error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::values::{self as v, Problem};

/// Whether a flag is upstream's or meshtables' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Upstream's: same name, shorthand, default and variables.
    Upstream,
    /// A meshtables extension.
    Ours,
}

/// Whether the CNI plugin's configuration may set a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cni {
    /// An interception setting, under the flag's long name.
    Setting,
    /// Refused in a plugin configuration, for this reason.
    NotHere(&'static str),
}

/// Where istio-cni takes a setting from in the pod it programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodField {
    /// Annotations, the first present wins.
    Annotation(&'static [&'static str]),
    /// A field of the `istio-proxy` container's securityContext, when non-zero.
    SecurityContext(&'static str),
    /// A boolean in the `istio-proxy` container's environment.
    ProxyEnv(&'static str),
}

/// A setting istio-cni reads from the pod, and its default when neither the pod nor the
/// plugin configuration says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FromPod {
    pub field: PodField,
    pub istio_cni_default: Option<&'static str>,
}

/// A flag's identity.
#[derive(Debug)]
pub struct Spec {
    pub long: &'static str,
    pub short: Option<char>,
    /// Environment variables, lowest precedence first: a later one wins over an earlier one.
    pub envs: &'static [&'static str],
    /// The default as text a user could type (parsed as a given value would be); `None` when
    /// "not given" means something of its own (documented by `default_doc`).
    pub default: Option<&'static str>,
    /// How help and README describe the default, when it is not simply `default`.
    pub default_doc: Option<&'static str>,
    pub boolean: bool,
    /// What a value is, in words.
    pub value: &'static str,
    pub help: &'static str,
    pub origin: Origin,
    pub cni: Cni,
    pub pod: Option<FromPod>,
}

/// A flag: its identity and its parser.
pub struct Flag<T: 'static> {
    pub spec: Spec,
    pub parse: fn(&str) -> Result<T, Problem>,
}

const fn value(
    long: &'static str,
    short: Option<char>,
    envs: &'static [&'static str],
    default: Option<&'static str>,
    value: &'static str,
    help: &'static str,
) -> Spec {
    Spec {
        long,
        short,
        envs,
        default,
        default_doc: None,
        boolean: false,
        value,
        help,
        origin: Origin::Upstream,
        cni: Cni::Setting,
        pod: None,
    }
}

const fn boolean(
    long: &'static str,
    short: Option<char>,
    envs: &'static [&'static str],
    help: &'static str,
) -> Spec {
    let mut s = value(long, short, envs, Some("false"), "bool", help);
    s.boolean = true;
    s
}

impl Spec {
    /// A boolean that is on unless turned off.
    const fn default_true(mut self) -> Spec {
        self.default = Some("true");
        self
    }
    const fn ours(mut self) -> Spec {
        self.origin = Origin::Ours;
        self
    }
    const fn doc(mut self, default_doc: &'static str) -> Spec {
        self.default_doc = Some(default_doc);
        self
    }
    const fn not_in_cni(mut self, why: &'static str) -> Spec {
        self.cni = Cni::NotHere(why);
        self
    }
    const fn pod(mut self, field: PodField, istio_cni_default: Option<&'static str>) -> Spec {
        self.pod = Some(FromPod {
            field,
            istio_cni_default,
        });
        self
    }
}

macro_rules! table {
    ($list:ident: $($name:ident: $t:ty = $parse:expr, $spec:expr;)*) => {
        $(pub const $name: Flag<$t> = Flag { spec: $spec, parse: $parse };)*
        /// Every flag of the table, in the order `--help` and the README list them.
        pub const $list: &[&Spec] = &[$(&$name.spec),*];
    };
}

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

/// Raw values as given (on the command line, or as CNI settings), by flag.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Flags {
    given: BTreeMap<&'static str, String>,
}

impl Flags {
    /// The value given for `spec`, if any.
    pub fn get(&self, spec: &Spec) -> Option<&str> {
        self.given.get(spec.long).map(String::as_str)
    }
    /// Sets `spec` as if given on the command line (a later value replaces an earlier one).
    pub fn set(&mut self, spec: &'static Spec, value: impl Into<String>) {
        self.given.insert(spec.long, value.into());
    }
    pub fn is_set(&self, spec: &Spec) -> bool {
        self.given.contains_key(spec.long)
    }
    pub fn unset(&mut self, spec: &Spec) {
        self.given.remove(spec.long);
    }
    /// Sets a flag by its long name (a CNI key); `None` when no flag has that name.
    pub fn set_named(&mut self, long: &str, value: impl Into<String>) -> Option<&'static Spec> {
        let spec = by_long(long)?;
        self.set(spec, value);
        Some(spec)
    }
    /// The flags given on the command line in `matches`.
    pub fn from_matches(m: &ArgMatches) -> Flags {
        Flags::from_matches_of(m, ALL)
    }

    /// The flags of `specs` given on the command line.
    pub fn from_matches_of(m: &ArgMatches, specs: &[&'static Spec]) -> Flags {
        let mut flags = Flags::default();
        for spec in specs {
            if m.value_source(spec.long) == Some(clap::parser::ValueSource::CommandLine)
                && let Some(v) = m.get_one::<String>(spec.long)
            {
                flags.set(spec, v.clone());
            }
        }
        flags
    }
}

/// `--help` text of a flag: what it does, its variables and its default, from the table.
pub fn help(s: &Spec) -> String {
    let mut h = s.help.to_string();
    match s.envs {
        [] if s.origin == Origin::Upstream && !s.long.starts_with("log_") => {
            if !h.contains("No env var") {
                h.push_str(" No env var.");
            }
        }
        [] => {}
        [one] => h.push_str(&format!(" Env {one}.")),
        many => h.push_str(&format!(
            " Env {} ({} wins).",
            many.join(", "),
            many[many.len() - 1]
        )),
    }
    if let Some(d) = s
        .default_doc
        .or(s.default.filter(|d| !d.is_empty() && !s.boolean))
    {
        h.push_str(&format!(" Default: {}.", d.replace('`', "")));
    }
    h
}

fn arg(s: &'static Spec) -> Arg {
    let mut a = Arg::new(s.long)
        .long(s.long)
        .help(help(s))
        .action(ArgAction::Set);
    if let Some(c) = s.short {
        a = a.short(c);
    }
    if s.boolean {
        // pflag booleans: `--dry-run`, `--dry-run=true`, `-n`; never the next argument.
        a.num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_name("BOOL")
    } else {
        // pflag gives a value flag the next argument even when it starts with '-'.
        a.num_args(1).allow_hyphen_values(true).value_name("VALUE")
    }
}

/// The settings of `meshtables cni-install`, the DaemonSet process that installs the CNI
/// plugin on a node (`src/install`). Paths as the installer's container sees them, except
/// `host-cni-conf-dir`, which is where the runtime (on the host) finds the kubeconfig.
pub mod install {
    use super::{Flag, Spec, boolean, value};
    use crate::values as v;

    table! {
        INSTALL:
        CNI_BIN_DIR: std::path::PathBuf = v::absolute_path, value("cni-bin-dir", None, &["CNI_BIN_DIR"], Some("/host/opt/cni/bin"), "path",
            "Where the runtime looks for plugins (the host's /opt/cni/bin, mounted); the binary is copied there as meshtables-cni.");
        CNI_CONF_DIR: std::path::PathBuf = v::absolute_path, value("cni-conf-dir", None, &["MOUNTED_CNI_NET_DIR", "CNI_CONF_DIR"], Some("/host/etc/cni/net.d"), "path",
            "The runtime's network configuration directory (the host's /etc/cni/net.d, mounted).");
        HOST_CNI_CONF_DIR: std::path::PathBuf = v::absolute_path, value("host-cni-conf-dir", None, &["CNI_NET_DIR"], Some("/etc/cni/net.d"), "path",
            "The same directory as the host sees it: the kubeconfig path written into the plugin's entry.");
        CNI_CONF_NAME: String = v::conf_file_name, value("cni-conf-name", None, &["CNI_CONF_NAME"], Some(""), "file name",
            "The primary network's file (a .conflist, .conf or .json in the configuration directory); empty: the first file the runtime loads, as libcni and the runtimes decide.");
        KUBECONFIG_NAME: String = v::kubeconfig_file_name, value("kubeconfig-name", None, &["KUBECONFIG_FILENAME"], Some("meshtables-cni-kubeconfig"), "file name",
            "Name of the plugin's kubeconfig, written in the configuration directory.");
        SERVICE_ACCOUNT_DIR: std::path::PathBuf = v::absolute_path, value("service-account-dir", None, &["SERVICE_ACCOUNT_DIR"], Some("/var/run/secrets/kubernetes.io/serviceaccount"), "path",
            "The installer's service account token and CA (projected; rewritten kubeconfig when the token rotates).");
        KUBERNETES: bool = v::boolean, boolean("kubernetes", None, &["MESHTABLES_CNI_KUBERNETES"],
            "Give the plugin a kubeconfig and a kubernetes section, so per-pod settings come from the API server (default true).")
            .default_true();
        EXCLUDE_NAMESPACES: Vec<String> = v::namespaces, value("exclude-namespaces", None, &["EXCLUDE_NAMESPACES"], Some("kube-system"), "namespaces",
            "Namespaces whose pods the plugin leaves alone.");
        NATIVE_NFTABLES: bool = v::boolean, boolean("native-nftables", None, &["NATIVE_NFTABLES"],
            "The plugin programs pods over netlink (native nftables).");
        COMPACT: bool = v::boolean, boolean("compact", None, &["COMPACT"],
            "The plugin writes compact rulesets (--compact).");
        PLUGIN_SETTINGS: serde_json::Map<String, serde_json::Value> = v::json_object, value("plugin-settings", None, &["PLUGIN_SETTINGS"], Some(""), "JSON object",
            "More keys for the plugin's entry (interception settings by long flag name); checked as the plugin checks its configuration.");
        UNINSTALL: bool = v::boolean, boolean("uninstall", None, &["UNINSTALL"],
            "On SIGTERM, take the plugin out of the chain and remove its binary and kubeconfig (default true).")
            .default_true();
        LOG_LEVEL: crate::logging::Level = v::log_level, value("log-level", None, &["LOG_LEVEL"], Some("info"), "level",
            "The installer's log level: debug, info, warn, error or none (logs go to stderr).");
        LOG_AS_JSON: bool = v::boolean, boolean("log-as-json", None, &["LOG_AS_JSON"],
            "The installer logs one JSON object per line.");
    }
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

/// The `cni-install` subcommand: the installer's settings (`install::INSTALL`).
pub fn install_command() -> Command {
    Command::new("cni-install")
        .about("Install the CNI plugin on this node and keep it installed (a DaemonSet's process).")
        .args(install::INSTALL.iter().copied().map(arg))
        .args_override_self(true)
}

/// The `cni-ready` subcommand: the installer's readiness probe, with the installer's settings.
pub fn ready_command() -> Command {
    Command::new("cni-ready")
        .about("Exit 0 when this node's meshtables-cni installation is whole (the installer's readiness probe), else 1 and why.")
        .args(install::INSTALL.iter().copied().map(arg))
        .args_override_self(true)
}

/// The clap command: every subcommand takes every flag of the table.
pub fn command() -> Command {
    let args: Vec<Arg> = ALL.iter().copied().map(arg).collect();
    let mut cmd = Command::new("meshtables")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Program an Istio sidecar's traffic interception (a drop-in for istio-iptables).")
        .subcommand_required(true)
        .arg_required_else_help(true);
    for (name, alias, about) in SUBCOMMANDS {
        let mut sub = Command::new(name)
            .about(about)
            .args(args.clone())
            .args_override_self(true);
        if let Some(a) = alias {
            sub = sub.alias(a);
        }
        cmd = cmd.subcommand(sub);
    }
    cmd.subcommand(install_command())
        .subcommand(ready_command())
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The README's flag table, generated from `ALL`.
pub fn markdown_table() -> String {
    let mut out =
        String::from("| | flag | env (later wins) | default | value |\n|---|---|---|---|---|\n");
    rows(ALL, &mut out);
    out
}

/// The README's table of `cni-install` settings, generated from `install::INSTALL`.
pub fn install_table() -> String {
    let mut out = String::from("| flag | env (later wins) | default | what |\n|---|---|---|---|\n");
    for s in install::INSTALL {
        let envs: Vec<String> = s.envs.iter().map(|e| format!("`{e}`")).collect();
        out.push_str(&format!(
            "| `--{}` | {} | {} | {} |\n",
            s.long,
            envs.join(", "),
            cell(s.default.unwrap_or("false")),
            cell(s.help)
        ));
    }
    out
}

fn rows(specs: &[&Spec], out: &mut String) {
    for s in specs {
        let compat = match s.origin {
            Origin::Upstream => "=",
            Origin::Ours => "+",
        };
        let name = match s.short {
            Some(c) => format!("`-{c}`, `--{}`", s.long),
            None => format!("`--{}`", s.long),
        };
        let envs = if s.envs.is_empty() {
            match (s.origin, s.long.starts_with("log_")) {
                (Origin::Upstream, false) => "(none, as upstream)".to_string(),
                _ => String::new(),
            }
        } else {
            s.envs
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let default = s.default_doc.or(s.default).unwrap_or("");
        out.push_str(&format!(
            "| {compat} | {name} | {envs} | {} | {} |\n",
            cell(default),
            cell(s.value)
        ));
    }
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
        let m = command()
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
        let f = Flags::from_matches(sub);
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
