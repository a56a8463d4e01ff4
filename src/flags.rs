//! Flag tables: every flag declared once, with everything else derived from it. A flag is a
//! `Flag<T>`: its identity (`Spec`: long name, shorthand, environment variables in precedence
//! order, default, help, whether the CNI plugin accepts it as a setting, which pod field
//! feeds it in CNI mode) and the parser that turns text into a `T` (`values`). This module is
//! the machinery (`table!`, `Flags`, clap arguments, `--help` text, README rows) and the
//! installer's table (`install`); a scheme's own table is its profile's (Istio's:
//! `profile::istio::flags`), from which its CLI, CNI keys, pod annotations and README tables
//! derive.
//!
//! Raw values stay text (`Flags`) until config resolves them, so config can tell "given on
//! the command line" from "not given", apply upstream's precedence (flag > later env > earlier
//! env > default) and name the exact flag or variable in an error.

use std::collections::BTreeMap;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::values::Problem;

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

pub(crate) const fn value(
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

pub(crate) const fn boolean(
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
    pub(crate) const fn default_true(mut self) -> Spec {
        self.default = Some("true");
        self
    }
    pub(crate) const fn ours(mut self) -> Spec {
        self.origin = Origin::Ours;
        self
    }
    /// "Not given" means something of its own (`Resolver::given`), said by `doc`.
    pub(crate) const fn no_default(mut self) -> Spec {
        self.default = None;
        self
    }
    pub(crate) const fn doc(mut self, default_doc: &'static str) -> Spec {
        self.default_doc = Some(default_doc);
        self
    }
    pub(crate) const fn not_in_cni(mut self, why: &'static str) -> Spec {
        self.cni = Cni::NotHere(why);
        self
    }
    pub(crate) const fn pod(
        mut self,
        field: PodField,
        istio_cni_default: Option<&'static str>,
    ) -> Spec {
        self.pod = Some(FromPod {
            field,
            istio_cni_default,
        });
        self
    }
}

/// Declares a flag table: a `Flag` constant per flag and the list of them all.
macro_rules! table {
    ($list:ident: $($name:ident: $t:ty = $parse:expr, $spec:expr;)*) => {
        $(pub const $name: Flag<$t> = Flag { spec: $spec, parse: $parse };)*
        /// Every flag of the table, in the order `--help` and the README list them.
        pub const $list: &[&Spec] = &[$(&$name.spec),*];
    };
}
pub(crate) use table;

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

/// The clap argument of a flag, as pflag parses it.
pub fn arg(s: &'static Spec) -> Arg {
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
        AMBIENT_ENABLED: bool = v::boolean, boolean("ambient-enabled", None, &["AMBIENT_ENABLED"],
            "Run the ambient node agent beside the installer: the node's probe rules, ztunnel's ZDS socket, and ambient pods redirected at their ADD (needs --kubernetes; the in-pod settings are the ambient table's env: AMBIENT_DNS_CAPTURE, AMBIENT_IPV6, NATIVE_NFTABLES...).");
        AMBIENT_ENABLEMENT_SELECTOR: crate::selector::EnablementSelectors = crate::selector::enablement_selectors, value("ambient-enablement-selector", None, &["AMBIENT_ENABLEMENT_SELECTOR"], Some(crate::selector::DEFAULT_YAML), "YAML list",
            "With --ambient-enabled: which pods are ambient, istio-cni's enablement selectors (its chart's ambient.enablementSelectors, which its configmap renders here as YAML): a list of {podSelector, namespaceSelector}, each a Kubernetes label selector (matchLabels; matchExpressions with In, NotIn, Exists, DoesNotExist); a pod is ambient when one entry matches its labels and its namespace's; an empty selector matches everything, [] no pod. Host-network pods, pods with a sidecar, ztunnel and --exclude-namespaces never are. Written into the plugin's entry (kubernetes.enablement-selectors), so the plugin's ADD and the agent decide alike.")
            .doc("istio-cni's chart default: pods labelled `istio.io/dataplane-mode=ambient`, and pods not labelled `none` in namespaces labelled `ambient`");
        ZTUNNEL_UDS_ADDRESS: std::path::PathBuf = v::absolute_path, value("ztunnel-uds-address", None, &["ZTUNNEL_UDS_ADDRESS"], Some("/var/run/ztunnel/ztunnel.sock"), "path",
            "The socket ztunnel connects to for its pods (ZDS), shared with the ztunnel DaemonSet.");
        CNI_AGENT_RUN_DIR: std::path::PathBuf = v::absolute_path, value("cni-agent-run-dir", None, &["CNI_AGENT_RUN_DIR"], Some("/var/run/meshtables"), "path",
            "The agent's directory: the plugin's socket (agent.sock) and the agent's kubeconfig. A host directory mounted at the same path, since the plugin connects from the host.");
        DRIFT_CHECK_INTERVAL: u64 = v::seconds, value("drift-check-interval", None, &["AMBIENT_DRIFT_CHECK_INTERVAL"], Some("10"), "seconds",
            "With --ambient-enabled: how often the agent checks every enrolled pod's rules (one netlink dump each) and the node's probe rules, and puts back what is gone (0: never).");
        NODE_NAME: String = v::optional_node_name, value("node-name", None, &["NODE_NAME"], Some(""), "node name",
            "With --ambient-enabled (required then): this node's name (the pod's spec.nodeName, from the downward API), whose pods the agent lists and watches.");
        METRICS_ADDRESS: Option<std::net::SocketAddr> = v::optional_listen_address, value("metrics-address", None, &["AMBIENT_METRICS_ADDRESS"], Some(""), "IP:PORT",
            "With --ambient-enabled: serve the agent's Prometheus metrics (GET /metrics) there; empty (the default): no listener. The DaemonSet is on the host's network: choose a loopback or node-internal address.")
            .doc("(off)");
        REPAIR_ENABLED: bool = v::boolean, boolean("repair-enabled", None, &["REPAIR_ENABLED"],
            "With --ambient-enabled: the agent looks after this node's sidecar pods that rely on the plugin (istio-validation) but started while it was not in the chain, as the repair mode says (--repair-repair-pods, --repair-delete-pods, --repair-label-pods; default true).")
            .default_true();
        REPAIR_REPAIR_PODS: bool = v::boolean, boolean("repair-repair-pods", None, &["REPAIR_REPAIR_PODS"],
            "Repair mode: a sidecar pod whose interception rules are not in place (the plugin's own check) gets them written in place, and its next istio-validation passes. Wins over the other modes when set true, as upstream's; not given: on unless --repair-delete-pods or --repair-label-pods is.")
            .no_default()
            .doc("true unless a mode is given");
        REPAIR_DELETE_PODS: bool = v::boolean, boolean("repair-delete-pods", None, &["REPAIR_DELETE_PODS"],
            "Repair mode: a broken sidecar pod (istio-validation's last run ended with exit code 126 and it has not passed since) is deleted (DELETE with its uid and resourceVersion as preconditions), to be created again, as upstream's. Needs RBAC `delete` on pods. Wins over --repair-label-pods.");
        REPAIR_LABEL_PODS: bool = v::boolean, boolean("repair-label-pods", None, &["REPAIR_LABEL_PODS"],
            "Repair mode: a broken sidecar pod (as --repair-delete-pods finds it) is labelled --repair-broken-pod-label-key=--repair-broken-pod-label-value through pods/status, as upstream's; one that has the key already is left alone.");
        REPAIR_BROKEN_POD_LABEL_KEY: crate::values::LabelKey = v::label_key, value("repair-broken-pod-label-key", None, &["REPAIR_BROKEN_POD_LABEL_KEY"], Some("cni.istio.io/uninitialized"), "label key",
            "The label --repair-label-pods sets (checked as the API server checks a label key).");
        REPAIR_BROKEN_POD_LABEL_VALUE: crate::values::LabelValue = v::label_value, value("repair-broken-pod-label-value", None, &["REPAIR_BROKEN_POD_LABEL_VALUE"], Some("true"), "label value",
            "The value of that label (checked as the API server checks a label value).");
        POD_NAMESPACE: String = v::namespace_name, value("pod-namespace", None, &["POD_NAMESPACE"], Some("istio-system"), "namespace",
            "Istio's namespace, where ztunnel runs (its pods, labelled app=ztunnel, are never enrolled).");
        LOG_LEVEL: crate::logging::Level = v::log_level, value("log-level", None, &["LOG_LEVEL"], Some("info"), "level",
            "The installer's log level: debug, info, warn, error or none (logs go to stderr).");
        LOG_AS_JSON: bool = v::boolean, boolean("log-as-json", None, &["LOG_AS_JSON"],
            "The installer logs one JSON object per line.");
    }
}

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

/// A README table cell.
pub fn cell(text: &str) -> String {
    text.replace('|', "\\|")
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
            cell(s.default_doc.or(s.default).unwrap_or("false")),
            cell(s.help)
        ));
    }
    out
}

/// README table rows for `specs`: compatibility, name, variables, default, value.
pub fn rows(specs: &[&Spec], out: &mut String) {
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
