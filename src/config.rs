//! Flags + environment + host facts → a validated `Config`.
//!
//! Precedence is upstream's: command-line flag > secondary env var > primary env var >
//! default. Unlike upstream, a bad value is never copied into rules or silently ignored:
//! it is an error that names the flag or variable, the value and what is expected. The
//! environment comes from an `EnvSource` and machine facts from a `Host`, so tests pass
//! their own instead of mutating the process.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;

use crate::cli::Flags;
use crate::host::{Host, HostError};
use crate::plan::{Cidr, Group, Mark, Name, Port, RouteTable, Uid};

/// Where environment variables come from. `Sync`, so work can move into a network namespace
/// on another thread (`netns`).
pub trait EnvSource: Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Errors from resolving the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag or env value is malformed. Exit status 2.
    #[error("{origin}: {value:?} {problem}")]
    Invalid {
        origin: Origin,
        value: String,
        problem: String,
    },
    /// Reading a fact from the machine failed. Exit status 1.
    #[error(transparent)]
    Host(#[from] HostError),
    /// An owner group name /etc/group does not know. Exit status 1.
    #[error(
        "{origin}: group {name:?} is not in /etc/group; use a numeric gid (meshtables never makes `-m owner` or `skgid` look names up through NSS)"
    )]
    UnknownGroup { origin: Origin, name: String },
    /// IPv6 auto-detection found no usable address (upstream's error). Exit status 1.
    #[error(
        "no valid local IP address found (needed to decide IPv6 with --enable-ipv6=auto; pass --enable-ipv6 true|false)"
    )]
    NoLocalIp,
}

impl ConfigError {
    /// Exit status: 2 for bad input, 1 for a failure reading the machine.
    pub fn exit_code(&self) -> i32 {
        match self {
            ConfigError::Invalid { .. } => 2,
            _ => 1,
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Flag {
        long: &'static str,
        short: Option<char>,
    },
    Env(&'static str),
    Default(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag {
                long,
                short: Some(s),
            } => write!(f, "--{long} (-{s})"),
            Origin::Flag { long, short: None } => write!(f, "--{long}"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Default(long) => write!(f, "default of --{long}"),
        }
    }
}

/// Inbound interception mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum InterceptMode {
    #[serde(rename = "REDIRECT")]
    Redirect,
    #[serde(rename = "TPROXY")]
    Tproxy,
}

/// `-b`: all ports, a list, or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InboundPorts {
    All,
    List(Vec<Port>),
}

impl InboundPorts {
    pub fn is_empty(&self) -> bool {
        matches!(self, InboundPorts::List(l) if l.is_empty())
    }
}

/// `-i` / `-x`: CIDRs split by family; `-i '*'` sets `all`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Cidrs {
    pub all: bool,
    pub v4: Vec<Cidr>,
    pub v6: Vec<Cidr>,
}

impl Cidrs {
    /// Whether any listed prefix has a loopback address (upstream's `HasLoopBackIP`).
    pub fn has_loopback(&self) -> bool {
        self.v4
            .iter()
            .chain(&self.v6)
            .any(|c| c.0.addr().is_loopback())
    }
}

/// Owner groups whose outbound traffic is captured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OwnerGroups {
    All,
    List(Vec<Group>),
}

/// Which iptables variant to force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum XtablesVariant {
    Legacy,
    Nft,
}

/// Dry-run output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// iptables-restore text, or with native nftables the nft transaction.
    Text,
    /// The plan as JSON.
    Json,
}

/// Which subcommand was invoked (or implied by argv[0]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subcommand {
    Apply,
    Clean,
    Check,
}

/// What a run does, decided once here from the subcommand and `--cleanup-only` /
/// `CLEANUP_ONLY`, before any backend is chosen. Backends receive it; none re-derives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Install the rules (`apply`, `istio-iptables`).
    Apply,
    /// Remove everything of ours (`clean`, `istio-clean-iptables`, `--cleanup-only`).
    Clean,
    /// Compare the live rules with the plan (`check`, the CNI plugin's CHECK).
    Check,
}

/// The validated configuration. Host facts (IPv6, DNS servers, proxy uid) are already in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    pub action: Action,
    pub proxy_port: Port,
    pub inbound_capture_port: Port,
    pub inbound_tunnel_port: Port,
    pub proxy_uids: Vec<Uid>,
    pub proxy_gids: Vec<Group>,
    pub mode: InterceptMode,
    pub inbound_ports: InboundPorts,
    pub local_exclude_ports: Vec<Port>,
    pub exclude_interfaces: Vec<Name>,
    pub outbound_include: Cidrs,
    pub outbound_exclude: Cidrs,
    pub outbound_ports_include: Vec<Port>,
    pub outbound_ports_exclude: Vec<Port>,
    pub kube_virt_interfaces: Vec<Name>,
    pub tproxy_mark: Mark,
    pub tproxy_route_table: RouteTable,
    pub dry_run: bool,
    pub probe_port: Port,
    #[serde(serialize_with = "ser_duration")]
    pub probe_timeout: Duration,
    pub skip_rule_apply: bool,
    pub run_validation: bool,
    pub redirect_dns: bool,
    pub drop_invalid: bool,
    pub dual_stack: bool,
    pub capture_all_dns: bool,
    pub network_namespace: Option<PathBuf>,
    pub cni_mode: bool,
    pub reconcile: bool,
    pub force_apply: bool,
    pub native_nftables: bool,
    pub force_iptables_binary: Option<XtablesVariant>,
    pub enable_ipv6: bool,
    /// The address IPv6 detection settled on (used by validation), when detection ran.
    pub host_ip: Option<IpAddr>,
    pub dns_servers_v4: Vec<IpAddr>,
    pub dns_servers_v6: Vec<IpAddr>,
    pub owner_groups_include: OwnerGroups,
    pub owner_groups_exclude: Vec<Group>,
    pub ipv4_loopback_cidr: Cidr,
    pub output: OutputFormat,
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{}ms", d.as_millis()))
}

/// Upstream's owner-group include list limit.
pub const MAX_OWNER_GROUPS: usize = 64;

/// One flag's identity: long name, shorthand, env names in increasing precedence.
struct Spec {
    long: &'static str,
    short: Option<char>,
    envs: &'static [&'static str],
}

const fn spec(long: &'static str, short: Option<char>, envs: &'static [&'static str]) -> Spec {
    Spec { long, short, envs }
}

/// A resolved raw value and its origin.
struct Raw {
    value: String,
    origin: Origin,
}

struct Resolver<'a> {
    env: &'a dyn EnvSource,
}

impl Resolver<'_> {
    /// flag > later env names > earlier env names; `None` when nothing is set.
    fn raw(&self, flag: &Option<String>, s: &Spec) -> Option<Raw> {
        if let Some(v) = flag {
            return Some(Raw {
                value: v.clone(),
                origin: Origin::Flag {
                    long: s.long,
                    short: s.short,
                },
            });
        }
        s.envs.iter().rev().find_map(|name| {
            self.env.var(name).map(|value| Raw {
                value,
                origin: Origin::Env(name),
            })
        })
    }

    fn value_or(&self, flag: &Option<String>, s: &Spec, default: &str) -> Raw {
        self.raw(flag, s).unwrap_or_else(|| Raw {
            value: default.to_string(),
            origin: Origin::Default(s.long),
        })
    }

    fn bool(&self, flag: &Option<String>, s: &Spec) -> Result<bool, ConfigError> {
        // An empty env var counts as unset, as upstream (its parse error keeps the default).
        let raw = match self.raw(flag, s) {
            Some(r) if !(r.value.is_empty() && matches!(r.origin, Origin::Env(_))) => r,
            _ => return Ok(false),
        };
        parse_bool(raw.value.trim())
            .ok_or_else(|| invalid(raw, "is not a boolean (expected true or false)"))
    }
}

/// Go's `strconv.ParseBool`, which upstream uses for flags, env vars and pod env.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn invalid(raw: Raw, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        origin: raw.origin,
        value: raw.value,
        problem: problem.into(),
    }
}

/// Upstream's list split: comma separated, empty items dropped; we also trim items.
fn items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

fn parse_port(s: &str) -> Option<Port> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().and_then(Port::new)
}

fn port(raw: Raw) -> Result<Port, ConfigError> {
    parse_port(raw.value.trim()).ok_or_else(|| invalid(raw, "is not a port (expected 1-65535)"))
}

fn ports(raw: Raw) -> Result<Vec<Port>, ConfigError> {
    let parsed: Option<Vec<Port>> = items(&raw.value).map(parse_port).collect();
    parsed.ok_or_else(|| {
        invalid(
            raw,
            "is not a port list (expected 1-65535, comma separated)",
        )
    })
}

fn parse_u32(s: &str) -> Option<u32> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).ok();
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn uids(raw: Raw) -> Result<Vec<Uid>, ConfigError> {
    let parsed: Option<Vec<Uid>> = items(&raw.value).map(|i| parse_id(i).map(Uid)).collect();
    match parsed {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(
            raw,
            "is not a uid list (expected numeric uids, comma separated)",
        )),
    }
}

fn gids(raw: Raw) -> Result<Vec<Group>, ConfigError> {
    let parsed: Option<Vec<Group>> = items(&raw.value)
        .map(|i| parse_id(i).map(Group::Id))
        .collect();
    match parsed {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(invalid(
            raw,
            "is not a gid list (expected numeric gids, comma separated)",
        )),
    }
}

fn group(s: &str) -> Option<Group> {
    if let Some(id) = parse_id(s) {
        return Some(Group::Id(id));
    }
    // Group names as in /etc/group: a letter or '_' first, then [A-Za-z0-9_.-], at most 32.
    let ok = s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return None;
    }
    Name::parse(s, 32).ok().map(Group::Name)
}

fn groups(raw: Raw) -> Result<Vec<Group>, ConfigError> {
    let parsed: Option<Vec<Group>> = items(&raw.value).map(group).collect();
    parsed.ok_or_else(|| {
        invalid(
            raw,
            "is not a group list (expected group names or numeric gids, comma separated)",
        )
    })
}

fn interfaces(raw: Raw) -> Result<Vec<Name>, ConfigError> {
    let mut out = Vec::new();
    let text = raw.value.clone();
    for i in items(&text) {
        match Name::parse(i, 15) {
            Ok(n) => out.push(n),
            Err(why) => {
                let problem = format!(
                    "is not an interface list: {i:?} {why} (expected names of 1-15 characters without whitespace, quotes, '/' or ':', comma separated)"
                );
                return Err(invalid(raw, problem));
            }
        }
    }
    Ok(out)
}

fn cidrs(raw: Raw, allow_all: bool) -> Result<Cidrs, ConfigError> {
    let mut out = Cidrs::default();
    let text = raw.value.clone();
    let v = text.trim();
    if v == "*" {
        if allow_all {
            out.all = true;
            return Ok(out);
        }
        return Err(invalid(
            raw,
            "cannot be \"*\" (expected CIDRs, comma separated)",
        ));
    }
    for item in items(v) {
        let Ok(net) = item.parse::<IpNet>() else {
            let hint = if item.parse::<IpAddr>().is_ok() {
                format!(
                    "is not a CIDR list: {item:?} has no prefix length (write {item}/32 or {item}/128)"
                )
            } else {
                format!("is not a CIDR list: {item:?} is not an address/prefix")
            };
            let hint = if allow_all {
                format!("{hint} (expected \"*\" or CIDRs, comma separated)")
            } else {
                format!("{hint} (expected CIDRs, comma separated)")
            };
            return Err(invalid(raw, hint));
        };
        let c = Cidr(net);
        match net {
            IpNet::V4(_) => out.v4.push(c),
            IpNet::V6(_) => out.v6.push(c),
        }
    }
    Ok(out)
}

fn mark(raw: Raw) -> Result<Mark, ConfigError> {
    match parse_u32(&raw.value) {
        Some(m) if m != 0 => Ok(Mark(m)),
        _ => Err(invalid(
            raw,
            "is not a mark (expected a number 1-4294967295, decimal or 0x hex)",
        )),
    }
}

fn route_table(raw: Raw) -> Result<RouteTable, ConfigError> {
    match parse_u32(&raw.value) {
        Some(t) if t != 0 && !(253..=255).contains(&t) => Ok(RouteTable(t)),
        Some(253..=255) => Err(invalid(
            raw,
            "is a reserved routing table (default, main, local); expected another number 1-4294967295",
        )),
        _ => Err(invalid(
            raw,
            "is not a routing table (expected a number 1-4294967295)",
        )),
    }
}

/// Go's `time.ParseDuration`, for the units that make sense here.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[u..];
    }
    (total.is_finite() && total < 1e9).then(|| Duration::from_secs_f64(total))
}

fn ip_list(raw: Raw) -> Result<Vec<IpAddr>, ConfigError> {
    let parsed: Option<Vec<IpAddr>> = items(&raw.value).map(|i| i.parse().ok()).collect();
    parsed.ok_or_else(|| {
        invalid(
            raw,
            "is not an address list (expected IP addresses, comma separated)",
        )
    })
}

/// What has to be known before any host fact is read: whether nothing is to be touched, and
/// the network namespace in which the host facts are to be read and the work done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Early {
    pub dry_run: bool,
    pub network_namespace: Option<PathBuf>,
}

/// Resolves `Early` from flags and environment (the same values `resolve` settles on).
pub fn early(flags: &Flags, env: &dyn EnvSource) -> Result<Early, ConfigError> {
    let r = Resolver { env };
    Ok(Early {
        dry_run: dry_run(&r, flags)?,
        network_namespace: network_namespace(&r, flags)?,
    })
}

fn dry_run(r: &Resolver, f: &Flags) -> Result<bool, ConfigError> {
    r.bool(&f.dry_run, &spec("dry-run", Some('n'), &["DRY_RUN"]))
}

fn network_namespace(r: &Resolver, f: &Flags) -> Result<Option<PathBuf>, ConfigError> {
    r.raw(
        &f.network_namespace,
        &spec("network-namespace", None, &["NETWORK_NAMESPACE"]),
    )
    .filter(|raw| !raw.value.is_empty())
    .map(|raw| {
        if raw.value.contains(['\n', '\0']) {
            Err(invalid(raw, "is not a path"))
        } else {
            Ok(PathBuf::from(raw.value))
        }
    })
    .transpose()
}

/// The one decision of what to do: `clean` and `apply --cleanup-only` (flag or
/// `CLEANUP_ONLY`) clean; `check` with `--cleanup-only` is a contradiction, refused.
fn action(r: &Resolver, f: &Flags, sub: Subcommand) -> Result<Action, ConfigError> {
    let spec = spec("cleanup-only", None, &["CLEANUP_ONLY"]);
    let cleanup_only = r.bool(&f.cleanup_only, &spec)?;
    Ok(match (sub, cleanup_only) {
        (Subcommand::Clean, _) | (Subcommand::Apply, true) => Action::Clean,
        (Subcommand::Apply, false) => Action::Apply,
        (Subcommand::Check, false) => Action::Check,
        (Subcommand::Check, true) => match r.raw(&f.cleanup_only, &spec) {
            Some(raw) => {
                return Err(invalid(
                    raw,
                    "asks for a clean, but `check` compares the live rules with what apply installs (drop --cleanup-only, or run `clean`)",
                ));
            }
            None => Action::Check,
        },
    })
}

/// Resolve flags, environment and host facts into a validated `Config`, for subcommand
/// `sub` (which, with `--cleanup-only`, decides `Config::action`).
pub fn resolve(
    flags: &Flags,
    sub: Subcommand,
    env: &dyn EnvSource,
    host: &dyn Host,
) -> Result<Config, ConfigError> {
    let r = Resolver { env };
    let f = flags;
    let action = action(&r, f, sub)?;

    let proxy_port = port(r.value_or(&f.envoy_port, &spec("envoy-port", Some('p'), &[]), "15001"))?;
    let inbound_capture_port = port(r.value_or(
        &f.inbound_capture_port,
        &spec("inbound-capture-port", Some('z'), &["INBOUND_CAPTURE_PORT"]),
        "15006",
    ))?;
    let inbound_tunnel_port = port(r.value_or(
        &f.inbound_tunnel_port,
        &spec("inbound-tunnel-port", Some('e'), &["INBOUND_TUNNEL_PORT"]),
        "15008",
    ))?;

    // -u: empty means "look the proxy user up", as upstream (by /etc/passwd, never NSS).
    let uid_raw = r.raw(&f.proxy_uid, &spec("proxy-uid", Some('u'), &["PROXY_UID"]));
    let uid_raw = match uid_raw {
        Some(raw) if !raw.value.trim().is_empty() => raw,
        _ => {
            let user = env
                .var("ENVOY_USER")
                .unwrap_or_else(|| "istio-proxy".into());
            let uid = host.lookup_uid(&user)?.unwrap_or(1337);
            Raw {
                value: uid.to_string(),
                origin: Origin::Default("proxy-uid"),
            }
        }
    };
    let uid_text = uid_raw.value.clone();
    let proxy_uids = uids(uid_raw)?;
    // -g defaults to the text of -u (upstream copies the uid string, not the user's group).
    let gid_raw = match r.raw(&f.proxy_gid, &spec("proxy-gid", Some('g'), &["PROXY_GID"])) {
        Some(raw) if !raw.value.trim().is_empty() => raw,
        _ => Raw {
            value: uid_text,
            origin: Origin::Default("proxy-gid"),
        },
    };
    let proxy_gids = gids(gid_raw)?;

    let mode_raw = r.value_or(
        &f.istio_inbound_interception_mode,
        &spec(
            "istio-inbound-interception-mode",
            Some('m'),
            &["ISTIO_INBOUND_INTERCEPTION_MODE"],
        ),
        "",
    );
    let mode = match mode_raw.value.trim() {
        "" | "REDIRECT" => InterceptMode::Redirect,
        "TPROXY" => InterceptMode::Tproxy,
        _ => {
            return Err(invalid(
                mode_raw,
                "is not an interception mode (expected REDIRECT or TPROXY, upper case)",
            ));
        }
    };

    let b = r.value_or(
        &f.istio_inbound_ports,
        &spec("istio-inbound-ports", Some('b'), &["ISTIO_INBOUND_PORTS"]),
        "",
    );
    let inbound_ports = if b.value.trim() == "*" {
        InboundPorts::All
    } else {
        let parsed: Option<Vec<Port>> = items(&b.value).map(parse_port).collect();
        InboundPorts::List(parsed.ok_or_else(|| {
            invalid(
                b,
                "is not a port list (expected \"*\" or ports 1-65535, comma separated)",
            )
        })?)
    };
    let list = |flag: &Option<String>, s: Spec| r.value_or(flag, &s, "");
    let local_exclude_ports = ports(list(
        &f.istio_local_exclude_ports,
        spec(
            "istio-local-exclude-ports",
            Some('d'),
            &["ISTIO_LOCAL_EXCLUDE_PORTS"],
        ),
    ))?;
    let exclude_interfaces = interfaces(list(
        &f.istio_exclude_interfaces,
        spec(
            "istio-exclude-interfaces",
            Some('c'),
            &["ISTIO_EXCLUDE_INTERFACES"],
        ),
    ))?;
    let outbound_include = cidrs(
        list(
            &f.istio_service_cidr,
            spec("istio-service-cidr", Some('i'), &["ISTIO_SERVICE_CIDR"]),
        ),
        true,
    )?;
    let outbound_exclude = cidrs(
        list(
            &f.istio_service_exclude_cidr,
            spec(
                "istio-service-exclude-cidr",
                Some('x'),
                &["ISTIO_SERVICE_EXCLUDE_CIDR"],
            ),
        ),
        false,
    )?;
    let outbound_ports_include = ports(list(
        &f.istio_outbound_ports,
        spec("istio-outbound-ports", Some('q'), &["ISTIO_OUTBOUND_PORTS"]),
    ))?;
    let outbound_ports_exclude = ports(list(
        &f.istio_local_outbound_ports_exclude,
        spec(
            "istio-local-outbound-ports-exclude",
            Some('o'),
            &["ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE"],
        ),
    ))?;
    let kube_virt_interfaces = interfaces(list(
        &f.kube_virt_interfaces,
        spec("kube-virt-interfaces", Some('k'), &["KUBE_VIRT_INTERFACES"]),
    ))?;
    let tproxy_mark = mark(r.value_or(
        &f.istio_inbound_tproxy_mark,
        &spec(
            "istio-inbound-tproxy-mark",
            Some('t'),
            &["ISTIO_INBOUND_TPROXY_MARK"],
        ),
        "1337",
    ))?;
    let tproxy_route_table = route_table(r.value_or(
        &f.istio_inbound_tproxy_route_table,
        &spec(
            "istio-inbound-tproxy-route-table",
            Some('r'),
            &["ISTIO_INBOUND_TPROXY_ROUTE_TABLE"],
        ),
        "133",
    ))?;

    let flag = |v: &Option<String>, long, short, envs| r.bool(v, &spec(long, short, envs));
    let dry_run = dry_run(&r, f)?;
    let skip_rule_apply = flag(
        &f.skip_rule_apply,
        "skip-rule-apply",
        None,
        &["SKIP_RULE_APPLY"],
    )?;
    let run_validation = flag(
        &f.run_validation,
        "run-validation",
        None,
        &["RUN_VALIDATION"],
    )?;
    let redirect_dns = flag(
        &f.redirect_dns,
        "redirect-dns",
        None,
        &["REDIRECT_DNS", "ISTIO_META_DNS_CAPTURE"],
    )?;
    let drop_invalid = flag(
        &f.drop_invalid,
        "drop-invalid",
        None,
        &["DROP_INVALID", "INVALID_DROP"],
    )?;
    let dual_stack = flag(
        &f.dual_stack,
        "dual-stack",
        None,
        &["DUAL_STACK", "ISTIO_DUAL_STACK"],
    )?;
    let capture_all_dns = flag(
        &f.capture_all_dns,
        "capture-all-dns",
        None,
        &["CAPTURE_ALL_DNS"],
    )?;
    let cni_mode = flag(&f.cni_mode, "cni-mode", None, &["CNI_MODE"])?;
    let reconcile = flag(&f.reconcile, "reconcile", None, &["RECONCILE"])?;
    let force_apply = flag(&f.force_apply, "force-apply", None, &["FORCE_APPLY"])?;
    let native_nftables = flag(
        &f.native_nftables,
        "native-nftables",
        None,
        &["NATIVE_NFTABLES"],
    )?;
    let log_json = flag(&f.log_as_json, "log_as_json", None, &[])?;
    let _ = log_json; // consumed by logging::init; validated here so a typo is an error

    let probe_port = port(r.value_or(
        &f.iptables_probe_port,
        &spec("iptables-probe-port", None, &["IPTABLES_PROBE_PORT"]),
        "15002",
    ))?;
    let pt = r.value_or(
        &f.probe_timeout,
        &spec("probe-timeout", None, &["PROBE_TIMEOUT"]),
        "5s",
    );
    let probe_timeout = parse_duration(&pt.value)
        .ok_or_else(|| invalid(pt, "is not a duration (expected e.g. 5s, 500ms, 1m)"))?;

    let network_namespace = network_namespace(&r, f)?;

    let fib = r.value_or(
        &f.force_iptables_binary,
        &spec("force-iptables-binary", None, &["FORCE_IPTABLES_BINARY"]),
        "",
    );
    let force_iptables_binary = match fib.value.trim() {
        "" => None,
        "legacy" => Some(XtablesVariant::Legacy),
        "nft" => Some(XtablesVariant::Nft),
        _ => {
            return Err(invalid(
                fib,
                "is not an iptables variant (expected legacy or nft)",
            ));
        }
    };

    let og = r.value_or(
        &f.outbound_owner_groups,
        &spec(
            "outbound-owner-groups",
            None,
            &["ISTIO_OUTBOUND_OWNER_GROUPS", "OUTBOUND_OWNER_GROUPS"],
        ),
        "*",
    );
    let (og_origin, og_text) = (og.origin.clone(), og.value.clone());
    let owner_groups_include = if og.value.trim() == "*" {
        OwnerGroups::All
    } else {
        let text = og.value.clone();
        let origin = og.origin.clone();
        let list = groups(og)?;
        if list.len() > MAX_OWNER_GROUPS {
            return Err(ConfigError::Invalid {
                origin,
                value: text,
                problem: format!(
                    "has {} groups; the number of owner groups whose outgoing traffic is redirected cannot exceed {MAX_OWNER_GROUPS}",
                    list.len()
                ),
            });
        }
        OwnerGroups::List(list)
    };
    let ogx = r.value_or(
        &f.outbound_owner_groups_exclude,
        &spec(
            "outbound-owner-groups-exclude",
            None,
            &[
                "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
                "OUTBOUND_OWNER_GROUPS_EXCLUDE",
            ],
        ),
        "",
    );
    let (ogx_origin, ogx_text) = (ogx.origin.clone(), ogx.value.clone());
    let owner_groups_exclude = groups(ogx)?;
    let names = GroupNames {
        host,
        cni_mode,
        dry_run,
        clean: action == Action::Clean,
    };
    let owner_groups_include = match owner_groups_include {
        OwnerGroups::List(list) => OwnerGroups::List(names.resolve(list, &og_origin, &og_text)?),
        all => all,
    };
    let owner_groups_exclude = names.resolve(owner_groups_exclude, &ogx_origin, &ogx_text)?;

    let lo = r.value_or(
        &f.ipv4_loopback_cidr,
        &spec(
            "ipv4-loopback-cidr",
            None,
            &["ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "IPV4_LOOPBACK_CIDR"],
        ),
        "127.0.0.1/32",
    );
    let ipv4_loopback_cidr = match lo.value.trim().parse::<Ipv4Net>() {
        Ok(n) if n.addr().is_loopback() && (8..=32).contains(&n.prefix_len()) => Cidr(IpNet::V4(n)),
        _ => {
            return Err(invalid(
                lo,
                "is not an IPv4 loopback CIDR (expected 127.x.x.x with a prefix length from /8 to /32)",
            ));
        }
    };

    let out = r.value_or(&f.output, &spec("output", None, &[]), "text");
    let output = match out.value.trim() {
        "text" => OutputFormat::Text,
        "json" => OutputFormat::Json,
        _ => {
            return Err(invalid(
                out,
                "is not an output format (expected text or json)",
            ));
        }
    };
    if let Some(level) = &f.log_output_level {
        crate::logging::parse_level(level).ok_or_else(|| ConfigError::Invalid {
            origin: Origin::Flag {
                long: "log_output_level",
                short: None,
            },
            value: level.clone(),
            problem: "is not a log level (expected LEVEL or SCOPE:LEVEL,... with debug, info, warn, error, fatal or none)".into(),
        })?;
    }

    // Host facts, read only when the flags leave them open.
    let v6 = r.value_or(
        &f.enable_ipv6,
        &spec("enable-ipv6", None, &["ENABLE_IPV6"]),
        "auto",
    );
    let (enable_ipv6, host_ip) = match v6.value.trim() {
        "true" => (true, None),
        "false" => (false, None),
        "auto" | "" => {
            let addrs = host.interface_addrs()?;
            match detect_ipv6(&addrs, dual_stack) {
                Some((ip, v6)) => (v6, Some(ip)),
                // A clean needs no address: it removes both families' rules.
                None if action == Action::Clean => (true, None),
                None => return Err(ConfigError::NoLocalIp),
            }
        }
        _ => {
            return Err(invalid(
                v6,
                "is not an IPv6 setting (expected auto, true or false)",
            ));
        }
    };

    let dns_flag = r.raw(&f.dns_servers, &spec("dns-servers", None, &["DNS_SERVERS"]));
    let resolv = r.value_or(
        &f.resolv_conf,
        &spec("resolv-conf", None, &["RESOLV_CONF"]),
        "/etc/resolv.conf",
    );
    if resolv.value.trim().is_empty() {
        return Err(invalid(resolv, "is not a path"));
    }
    let servers = match dns_flag {
        Some(raw) => ip_list(raw)?,
        None if redirect_dns && !capture_all_dns => {
            let text = host.read_file(resolv.value.trim())?;
            resolv_conf_servers(&text)
        }
        None => Vec::new(),
    };
    let (dns_servers_v4, dns_servers_v6) = servers.into_iter().partition(|a| a.is_ipv4());

    Ok(Config {
        action,
        proxy_port,
        inbound_capture_port,
        inbound_tunnel_port,
        proxy_uids,
        proxy_gids,
        mode,
        inbound_ports,
        local_exclude_ports,
        exclude_interfaces,
        outbound_include,
        outbound_exclude,
        outbound_ports_include,
        outbound_ports_exclude,
        kube_virt_interfaces,
        tproxy_mark,
        tproxy_route_table,
        dry_run,
        probe_port,
        probe_timeout,
        skip_rule_apply,
        run_validation,
        redirect_dns,
        drop_invalid,
        dual_stack,
        capture_all_dns,
        network_namespace,
        cni_mode,
        reconcile,
        force_apply,
        native_nftables,
        force_iptables_binary,
        enable_ipv6,
        host_ip,
        dns_servers_v4,
        dns_servers_v6,
        owner_groups_include,
        owner_groups_exclude,
        ipv4_loopback_cidr,
        output,
    })
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

/// Upstream's `getLocalIP`: skip loopback and link-local; without dual-stack the first
/// address decides; with dual-stack the first IPv6 address wins, else the first address.
pub fn detect_ipv6(addrs: &[IpAddr], dual_stack: bool) -> Option<(IpAddr, bool)> {
    let usable = addrs.iter().map(|a| a.to_canonical()).filter(|a| match a {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            let link_local_multicast = v6.is_multicast() && (v6.segments()[0] & 0x000f) == 2;
            !(v6.is_loopback() || v6.is_unicast_link_local() || link_local_multicast)
        }
    });
    let mut first = None;
    for a in usable {
        if !dual_stack {
            return Some((a, a.is_ipv6()));
        }
        first.get_or_insert(a);
        if a.is_ipv6() {
            return Some((first.unwrap(), true));
        }
    }
    first.map(|a| (a, false))
}

/// `nameserver` entries of a resolv.conf; unparsable entries are dropped, as upstream.
pub fn resolv_conf_servers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then(|| f.next()).flatten()
        })
        .filter_map(|s| s.split('%').next().and_then(|a| a.parse().ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
            assert!(f.set(k, v.to_string()), "{k} is a flag");
        }
        f
    }

    #[test]
    fn cni_mode_refuses_group_names_without_reading_a_file() {
        let host = Recording::default();
        let f = flags(&[
            ("proxy-uid", "1337"),
            ("cni-mode", "true"),
            ("outbound-owner-groups", "1000,java"),
        ]);
        let err = resolve(&f, Subcommand::Apply, &HashMap::new(), &host).unwrap_err();
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
        let cfg = resolve(&f, Subcommand::Apply, &HashMap::new(), &host).unwrap();
        assert_eq!(cfg.owner_groups_exclude, [Group::Id(1234), Group::Id(7)]);
        let mut dry = f.clone();
        dry.dry_run = Some("true".into());
        let cfg = resolve(&dry, Subcommand::Apply, &HashMap::new(), &host).unwrap();
        assert!(matches!(&cfg.owner_groups_exclude[0], Group::Name(n) if n.as_str() == "java"));
        let unknown = flags(&[
            ("proxy-uid", "1337"),
            ("outbound-owner-groups-exclude", "ftp"),
        ]);
        let err = resolve(&unknown, Subcommand::Apply, &HashMap::new(), &host).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownGroup { .. }), "{err}");
        // A clean does not fail on a name it cannot resolve.
        assert!(resolve(&unknown, Subcommand::Clean, &HashMap::new(), &host).is_ok());
    }

    #[test]
    fn check_with_cleanup_only_is_refused_and_apply_with_it_cleans() {
        let host = Recording::default();
        let f = flags(&[("proxy-uid", "1337"), ("cleanup-only", "true")]);
        let apply = resolve(&f, Subcommand::Apply, &HashMap::new(), &host).unwrap();
        assert_eq!(apply.action, Action::Clean);
        let env: HashMap<String, String> =
            [("CLEANUP_ONLY".to_string(), "true".to_string())].into();
        let plain = flags(&[("proxy-uid", "1337")]);
        assert_eq!(
            resolve(&plain, Subcommand::Apply, &env, &host)
                .unwrap()
                .action,
            Action::Clean
        );
        let err = resolve(&plain, Subcommand::Check, &env, &host).unwrap_err();
        assert!(err.to_string().contains("env CLEANUP_ONLY"), "{err}");
    }
}
