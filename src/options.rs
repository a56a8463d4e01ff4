//! What a run does and how: the engine's inputs, which a scheme's resolution decides (Istio's:
//! `config`) and the engine, the backends and the renderers consume. They name no scheme.

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
