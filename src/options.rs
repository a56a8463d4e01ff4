//! What a run does and how: the engine's inputs, which a scheme's resolution decides (Istio's:
//! `profile::istio::config`, ambient's: `profile::ambient::config`) and the engine, the
//! backends and the renderers consume. They name no scheme: a scheme's policy is a type
//! parameter (`Resolved<P>`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::logging::Level;
use crate::values::{OutputFormat, Port, XtablesVariant};

/// Which subcommand was invoked (or implied by argv[0]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    Apply,
    Clean,
    Check,
}

/// What a run does to the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// Install the rules (`apply`, `istio-iptables`).
    Apply,
    /// Remove everything of ours (`clean`, `istio-clean-iptables`, `--cleanup-only`).
    Clean,
    /// Compare the live rules with the plan (`check`, the CNI plugin's CHECK).
    Check,
}

/// What a run does: a verb, for real or as a dry run (which prints and touches nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Action {
    pub verb: Verb,
    pub dry_run: bool,
}

/// Which backend applies and checks (a clean uses every backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// nftables over netlink (`--native-nftables`).
    Netlink,
    /// The iptables binaries, detected as upstream or forced to a variant.
    Iptables(Option<XtablesVariant>),
}

/// `--run-validation`: the probe's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub probe_port: Port,
    pub proxy_port: Port,
    pub inbound_capture_port: Port,
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Probe over IPv6 (the address IPv6 detection settled on is IPv6).
    pub ipv6: bool,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{}ms", d.as_millis()))
}

/// How to run: nothing here changes which rules are planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunOptions {
    pub backend: BackendChoice,
    pub network_namespace: Option<PathBuf>,
    pub cni_mode: bool,
    pub reconcile: bool,
    pub force_apply: bool,
    pub skip_rule_apply: bool,
    pub validation: Option<Validation>,
    pub output: OutputFormat,
    #[serde(skip)]
    pub log_level: Level,
    pub log_json: bool,
}

/// What has to be known before any host fact is read: what to do, and the network namespace
/// in which the host facts are to be read and the work done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Early {
    pub action: Action,
    pub network_namespace: Option<PathBuf>,
    /// The run is a CNI plugin's, in the node's namespace (a `--network-namespace` naming
    /// the node's own is refused).
    pub cni_mode: bool,
}

/// A resolved configuration: what to do, how, and the scheme's policy `P` (what its rules
/// depend on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved<P> {
    pub action: Action,
    pub run: RunOptions,
    pub policy: P,
    /// Things the user should know (logged by the caller).
    #[serde(skip)]
    pub warnings: Vec<String>,
}
