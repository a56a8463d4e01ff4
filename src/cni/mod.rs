//! The chained CNI plugin: the same binary, invoked as `meshtables-cni`, implements the CNI
//! specification 1.1.0 and answers every version a chain carries (`version.rs`: 0.3.0,
//! 0.3.1, 0.4.0, 1.0.0, 1.1.0): `ADD`, `DEL`, `CHECK` (from 0.4.0), `VERSION`, `STATUS` and
//! `GC` (from 1.1.0). The runtime passes the network configuration on stdin and `CNI_*`
//! variables in the environment; results and errors go to stdout as JSON, logs to stderr.
//!
//! - `ADD` needs `prevResult` (we run after the primary plugin), programs `CNI_NETNS` with the
//!   same code path as `meshtables apply --network-namespace`, and passes `prevResult` on in
//!   the configuration's version (`result.rs`).
//!   With a `kubernetes` section, the pod is read from the API server and Istio's sidecar
//!   semantics apply (`pod.rs`): uninjected pods are left alone.
//! - `DEL` removes what is ours and succeeds when the namespace is already gone.
//! - `CHECK` fails unless the live rules are exactly what ADD installs.
//! - `GC` has nothing to collect: every object we create lives in the pod's namespace and
//!   goes with it. `STATUS` reports whether ADD could work (its kubeconfig, its binaries).
//!
//! Error codes are the spec's: 1 incompatible version, 2 unsupported field, 3 the namespace
//! does not exist, 4 a missing or invalid CNI_* variable, 5 I/O failure, 6 undecodable
//! configuration, 7 invalid configuration, 11 try again later (API server unreachable),
//! 50 not available (STATUS); and ours: 100 applying or removing rules failed, 101 CHECK found
//! a difference.

#[cfg(feature = "agent")]
pub mod ambient;
pub mod conf;
#[cfg(feature = "kubernetes")]
pub mod dns;
pub mod error;
#[cfg(feature = "kubernetes")]
pub mod http;
#[cfg(feature = "kubernetes")]
pub mod kube;
pub mod pod;
pub mod result;
pub mod version;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::flags::Flags;
use crate::host::Host;
use crate::logging;
use crate::profile::istio::Istio;
use crate::profile::istio::config::{ConfigError, EnvSource, Origin, Subcommand};
use crate::profile::istio::flags;
use crate::run::{self, RunError};
use crate::values::{NamespaceName, PodName, parse_bool};
use conf::{NetConf, SUPPORTED_VERSIONS};
pub use error::{CniError, code};
use version::Version;

/// The runtime's view of one invocation.
struct Invocation {
    command: String,
    container_id: Option<String>,
    netns: Option<String>,
    /// `CNI_ARGS`, parsed only by the commands that read it (ADD, CHECK).
    cni_args: String,
}

impl Invocation {
    /// CNI_ARGS: `K=V;K=V` (IgnoreUnknown, K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    fn args(&self) -> Result<HashMap<String, String>, CniError> {
        let mut args = HashMap::new();
        for pair in self.cni_args.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENV,
                    "invalid environment",
                    format!("CNI_ARGS: {pair:?} is not KEY=VALUE"),
                )
            })?;
            args.insert(k.to_string(), v.to_string());
        }
        Ok(args)
    }
}

fn invocation(env: &dyn EnvSource) -> Result<Invocation, CniError> {
    let var = |name: &str| env.var(name).filter(|v| !v.is_empty());
    let command = var("CNI_COMMAND").ok_or_else(|| {
        CniError::new(
            code::INVALID_ENV,
            "invalid environment",
            "CNI_COMMAND is not set (expected ADD, DEL, CHECK, VERSION, STATUS or GC)",
        )
    })?;
    Ok(Invocation {
        command,
        container_id: var("CNI_CONTAINERID"),
        netns: var("CNI_NETNS"),
        cni_args: var("CNI_ARGS").unwrap_or_default(),
    })
}

/// Requires the variables the spec makes mandatory for `command`.
fn require(inv: &Invocation, env: &dyn EnvSource) -> Result<(), CniError> {
    let needed: &[&str] = match inv.command.as_str() {
        "ADD" | "CHECK" => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
        _ => &[],
    };
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|n| env.var(n).is_none_or(|v| v.is_empty()))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment",
            format!(
                "{} {} not set",
                missing.join(", "),
                if missing.len() == 1 { "is" } else { "are" }
            ),
        ))
    }
}

/// The largest network configuration (with its `prevResult`) the plugin reads: real ones are a
/// few kilobytes.
pub const MAX_STDIN: u64 = 16 << 20;

/// The plugin's `main`: returns the exit status; stdout gets the result or error JSON.
pub fn main(
    env: &dyn EnvSource,
    host: &dyn Host,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> i32 {
    logging::init(logging::Level::Info, false);
    let mut input = Vec::new();
    let outcome = match stdin.take(MAX_STDIN + 1).read_to_end(&mut input) {
        Ok(n) if n as u64 > MAX_STDIN => Err(CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            format!("stdin is larger than {MAX_STDIN} bytes"),
        )),
        Ok(_) => invocation(env).and_then(|inv| dispatch(&inv, env, host, &input)),
        Err(e) => Err(CniError::new(
            code::IO,
            "cannot read the network configuration",
            e.to_string(),
        )),
    };
    match outcome {
        Ok(Some(result)) => {
            let _ = writeln!(stdout, "{result}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            logging::error(&format!("{} (code {}): {}", e.msg, e.code, e.details));
            let version = conf::version_of(&input).unwrap_or_else(Version::latest);
            let reply = json!({"cniVersion": version.as_str(), "code": e.code, "msg": e.msg, "details": e.details});
            let _ = writeln!(stdout, "{reply}");
            1
        }
    }
}

fn dispatch(
    inv: &Invocation,
    env: &dyn EnvSource,
    host: &dyn Host,
    input: &[u8],
) -> Result<Option<Value>, CniError> {
    if inv.command == "VERSION" {
        return Ok(Some(
            json!({"cniVersion": Version::latest().as_str(), "supportedVersions": SUPPORTED_VERSIONS}),
        ));
    }
    if !matches!(
        inv.command.as_str(),
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC"
    ) {
        return Err(CniError::new(
            code::INVALID_ENV,
            "invalid environment",
            format!(
                "CNI_COMMAND {:?} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC",
                inv.command
            ),
        ));
    }
    if inv.command == "DEL" {
        // DEL has nothing to validate: it removes everything of ours. It must not fail on
        // the configuration, or the runtime stops the chain and the primary plugin never
        // releases the pod's address.
        return del(inv, host, input).map(|()| None);
    }
    require(inv, env)?;
    let conf = conf::parse_for(&inv.command, input)?;
    if let Some(level) = conf
        .flags
        .get(&flags::LOG_OUTPUT_LEVEL.spec)
        .and_then(logging::parse_level)
    {
        logging::init(level, false);
    }
    match inv.command.as_str() {
        "ADD" => add(inv, host, &conf),
        "CHECK" => check(inv, host, &conf).map(|()| None),
        "STATUS" => status(&conf).map(|()| None),
        _ => {
            logging::debug(
                "GC: nothing to collect; every object of ours lives in a pod's namespace",
            );
            Ok(None)
        }
    }
}

/// What ADD and CHECK do for this pod: leave it alone, or program it with these flags.
enum Intent {
    Skip(String),
    /// An ambient pod: the node agent at this socket redirects it.
    #[cfg_attr(not(feature = "agent"), allow(dead_code))]
    Ambient {
        socket: std::path::PathBuf,
        pod: Box<pod::Pod>,
    },
    Program {
        flags: Box<Flags>,
        /// Flag → the pod field that set it, for error messages.
        from_pod: Vec<(&'static str, String)>,
    },
}

/// Refuses a configuration whose settings do not validate, before anything decides whether
/// this pod is programmed: a misconfigured plugin fails its first ADD, not only the first ADD
/// of a pod it intercepts. Only values are judged here (no host fact is read).
pub(crate) fn validate_settings(conf: &NetConf) -> Result<(), CniError> {
    struct NoHost;
    impl Host for NoHost {
        fn interface_addrs(&self) -> Result<Vec<std::net::IpAddr>, crate::host::HostError> {
            Ok(Vec::new())
        }
        fn read_file(&self, path: &str) -> Result<String, crate::host::HostError> {
            Err(crate::host::HostError::Read {
                path: path.into(),
                source: std::io::ErrorKind::Unsupported.into(),
            })
        }
    }
    let mut flags = conf.flags.clone();
    in_pod(&mut flags, None);
    set_unless_given(&mut flags, &flags::ENABLE_IPV6.spec, "true");
    set_unless_given(&mut flags, &flags::DNS_SERVERS.spec, "");
    flags.set(&flags::DRY_RUN.spec, "true");
    let resolved = crate::profile::istio::config::early(&flags, Subcommand::Apply, &no_env())
        .and_then(|early| {
            crate::profile::istio::config::resolve(&flags, &early, &no_env(), &NoHost)
        });
    match resolved {
        Err(e @ ConfigError::Invalid { .. }) => Err(run_error(RunError::Config(e), 0, &[])),
        _ => Ok(()),
    }
}

fn plan_for(inv: &Invocation, conf: &NetConf) -> Result<Intent, CniError> {
    validate_settings(conf)?;
    let mut flags = conf.flags.clone();
    let mut from_pod = Vec::new();
    if let Some(k) = &conf.kubernetes {
        let args = inv.args()?;
        let (ns, name) = match (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) {
            (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => (ns, name),
            _ => {
                return Ok(Intent::Skip(
                    "not a Kubernetes pod (no K8S_POD_NAME in CNI_ARGS)".into(),
                ));
            }
        };
        // A name the API server cannot hold is the runtime's mistake, not an outage: code 4
        // now, before any request (asking would only earn a retry, forever).
        let bad_arg = |var: &str, value: &str, problem: String| {
            CniError::new(
                code::INVALID_ENV,
                "invalid environment",
                format!("CNI_ARGS {var}: {value:?} {problem}"),
            )
        };
        let ns = NamespaceName::parse(ns).map_err(|p| bad_arg("K8S_POD_NAMESPACE", ns, p))?;
        let name = PodName::parse(name).map_err(|p| bad_arg("K8S_POD_NAME", name, p))?;
        if k.exclude_namespaces.iter().any(|x| x == ns.as_str()) {
            return Ok(Intent::Skip(format!("namespace {ns} is excluded")));
        }
        let pod = read_pod(&k.kubeconfig, &ns, &name)?;
        #[cfg(feature = "agent")]
        if let Some(socket) = &k.ambient_agent {
            match ambient::verdict(k, &pod)? {
                crate::agent::eligible::Verdict::Ambient => {
                    return Ok(Intent::Ambient {
                        socket: socket.clone(),
                        pod: Box::new(pod),
                    });
                }
                crate::agent::eligible::Verdict::Not(why) => {
                    logging::debug(&format!("pod {ns}/{name} is not ambient: {why}"));
                }
            }
        }
        match pod::evaluate(&pod, &mut flags) {
            pod::Verdict::Skip(why) => return Ok(Intent::Skip(format!("pod {ns}/{name}: {why}"))),
            pod::Verdict::Intercept { from_pod: f } => from_pod = f,
        }
    }
    let ipv6 = conf.prev_result.as_ref().and_then(|r| r.has_ipv6());
    finish(&mut flags, ipv6, inv.netns.clone())?;
    Ok(Intent::Program {
        flags: Box::new(flags),
        from_pod,
    })
}

/// The last of a sidecar pod's settings: IPv6 follows the pod's addresses (`ipv6`, from the
/// primary plugin's result) unless set: a dual-stack pod gets both families (istio-cni decides
/// from the first address only, and misses IPv6; docs/upstream.md, "CNI"); DNS redirection
/// needs its servers; and what every plugin run sets (`in_pod`).
fn finish(flags: &mut Flags, ipv6: Option<bool>, netns: Option<String>) -> Result<(), CniError> {
    if !flags.is_set(&flags::ENABLE_IPV6.spec)
        && let Some(v6) = ipv6
    {
        flags.set(&flags::ENABLE_IPV6.spec, v6.to_string());
    }
    let on = |f: &crate::flags::Spec| flags.get(f).and_then(parse_bool) == Some(true);
    if on(&flags::REDIRECT_DNS.spec)
        && !on(&flags::CAPTURE_ALL_DNS.spec)
        && !flags.is_set(&flags::DNS_SERVERS.spec)
    {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "redirect-dns needs capture-all-dns or dns-servers: the host's resolv.conf is not the pod's",
        ));
    }
    in_pod(flags, netns);
    Ok(())
}

/// The flags the plugin's ADD programs a sidecar pod with, for the node agent's repair of a
/// pod that started without them: `None` when Istio's semantics leave the pod alone.
pub fn sidecar_flags(
    conf: &NetConf,
    pod: &pod::Pod,
    netns: String,
    ipv6: Option<bool>,
) -> Result<Option<Flags>, CniError> {
    validate_settings(conf)?;
    // The ADD skips a pod of an excluded namespace before it reads the pod (`plan_for`): it
    // writes no rules there, so neither may a repair.
    if let Some(k) = &conf.kubernetes
        && k.exclude_namespaces.contains(&pod.metadata.namespace)
    {
        return Ok(None);
    }
    let mut flags = conf.flags.clone();
    if let pod::Verdict::Skip(_) = pod::evaluate(pod, &mut flags) {
        return Ok(None);
    }
    finish(&mut flags, ipv6, Some(netns))?;
    Ok(Some(flags))
}

/// What every plugin run sets on top of the configuration: the pod's namespace, CNI mode
/// (numeric owner ids, a per-namespace xtables lock), and `-u` 1337 when unset, because the
/// host's /etc/passwd is not the pod's.
fn in_pod(flags: &mut Flags, netns: Option<String>) {
    match netns {
        Some(ns) => flags.set(&flags::NETWORK_NAMESPACE.spec, ns),
        None => flags.unset(&flags::NETWORK_NAMESPACE.spec),
    }
    flags.set(&flags::CNI_MODE.spec, "true");
    set_unless_given(flags, &flags::PROXY_UID.spec, "1337");
}

fn set_unless_given(flags: &mut Flags, spec: &'static crate::flags::Spec, value: &str) {
    if !flags.is_set(spec) {
        flags.set(spec, value);
    }
}

/// Without the `kubernetes` feature (the init image's build) there is no API client.
#[cfg(not(feature = "kubernetes"))]
fn read_pod(
    _kubeconfig: &Path,
    _ns: &NamespaceName,
    _name: &PodName,
) -> Result<pod::Pod, CniError> {
    Err(no_kubernetes())
}

#[cfg(not(feature = "kubernetes"))]
fn no_kubernetes() -> CniError {
    CniError::new(
        code::UNSUPPORTED_FIELD,
        "unsupported field in the network configuration",
        "\"kubernetes\": this build of meshtables has no Kubernetes client (cargo feature `kubernetes`, left out of the init image); install a default build as the CNI plugin",
    )
}

/// How long ADD waits before each retry of an API server that is not answering. The
/// runtime retries a failed ADD itself; these only ride out a blip.
#[cfg(feature = "kubernetes")]
pub const POD_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(500),
    std::time::Duration::from_millis(1000),
    std::time::Duration::from_millis(1500),
];

#[cfg(feature = "kubernetes")]
fn read_pod(kubeconfig: &Path, ns: &NamespaceName, name: &PodName) -> Result<pod::Pod, CniError> {
    let client = kube::Client::from_kubeconfig(kubeconfig)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, "invalid kubeconfig", e.to_string()))?;
    fetch_pod(&client, ns, name, &POD_RETRIES)
}

/// Reads pod `ns/name`, waiting `retries[i]` before attempt i+1 while the API server is
/// unavailable. Every failure is a CNI error the runtime can act on: the kubeconfig or the
/// server's certificate or our credentials are wrong (7, retrying cannot help); the pod does
/// not exist (100); the server is unreachable or misbehaving (11, try again later).
#[cfg(feature = "kubernetes")]
pub fn fetch_pod(
    client: &kube::Client,
    ns: &NamespaceName,
    name: &PodName,
    retries: &[std::time::Duration],
) -> Result<pod::Pod, CniError> {
    let mut waits = retries.iter();
    loop {
        match client.pod(ns, name) {
            Ok(pod) => return Ok(pod),
            Err(e @ kube::KubeError::NotFound(_)) => {
                return Err(CniError::new(
                    code::RULES_FAILED,
                    "pod not found",
                    e.to_string(),
                ));
            }
            Err(e @ (kube::KubeError::Config { .. } | kube::KubeError::Rejected { .. })) => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    "the API server cannot be used with this kubeconfig",
                    e.to_string(),
                ));
            }
            Err(e @ kube::KubeError::Unavailable { .. }) => match waits.next() {
                Some(wait) => {
                    logging::warn(&e.to_string());
                    std::thread::sleep(*wait);
                }
                None => {
                    return Err(CniError::new(
                        code::TRY_AGAIN_LATER,
                        "the API server is not available",
                        e.to_string(),
                    ));
                }
            },
        }
    }
}

/// Maps a failure of the shared apply/clean/check path to a CNI error. A bad value that
/// came from the pod is named by the pod field that carried it.
fn run_error(e: RunError, failed: u32, from_pod: &[(&'static str, String)]) -> CniError {
    match &e {
        RunError::Config(ConfigError::Invalid {
            origin,
            value,
            problem,
        }) => {
            let source = match origin {
                Origin::Flag { long, .. } => from_pod
                    .iter()
                    .find(|(f, _)| f == long)
                    .map(|(_, src)| src.clone())
                    .unwrap_or_else(|| format!("{long:?} in the network configuration")),
                other => other.to_string(),
            };
            CniError::new(
                code::INVALID_CONFIG,
                "invalid interception settings",
                format!("{source}: {value:?} {problem}"),
            )
        }
        RunError::Netns(n) if n.is_refused() => CniError::new(
            code::INVALID_ENV,
            "CNI_NETNS is not a pod's network namespace",
            e.to_string(),
        ),
        RunError::Netns(n) if n.is_gone() => CniError::new(
            code::UNKNOWN_CONTAINER,
            "the network namespace does not exist",
            e.to_string(),
        ),
        _ => CniError::new(
            failed,
            if failed == code::CHECK_FAILED {
                "the rules are not in place"
            } else {
                "programming the rules failed"
            },
            e.to_string(),
        ),
    }
}

/// The environment the shared path sees: nothing from the runtime's process environment.
fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

fn add(inv: &Invocation, host: &dyn Host, conf: &NetConf) -> Result<Option<Value>, CniError> {
    let Some(prev) = &conf.prev_result else {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "prevResult is missing: meshtables-cni is a chained plugin and must follow the primary plugin in a conflist",
        ));
    };
    match plan_for(inv, conf)? {
        Intent::Skip(why) => logging::info(&format!("left alone: {why}")),
        #[cfg(feature = "agent")]
        Intent::Ambient { socket, pod } => {
            let ev = crate::agent::events::PodEvent {
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                netns: inv.netns.clone().unwrap_or_default(),
                ips: prev.ips(),
                container_id: inv.container_id.clone().unwrap_or_default(),
            };
            ambient::add(&socket, ev)?;
            logging::info(&format!(
                "ambient pod {}/{}: redirected to ztunnel by the node agent",
                pod.metadata.namespace, pod.metadata.name
            ));
        }
        #[cfg(not(feature = "agent"))]
        Intent::Ambient { .. } => {}
        Intent::Program { flags, from_pod } => {
            run::execute(
                &Istio,
                &flags,
                Subcommand::Apply,
                &no_env(),
                host,
                &mut std::io::sink(),
            )
            .map_err(|e| run_error(e, code::RULES_FAILED, &from_pod))?;
            logging::info(&format!(
                "programmed {} for container {}",
                inv.netns.as_deref().unwrap_or(""),
                inv.container_id.as_deref().unwrap_or("")
            ));
        }
    }
    // Pass the previous result on, in the configuration's version (converted from its own,
    // as libcni's GetAsVersion does).
    Ok(Some(prev.to_json(conf.cni_version)))
}

/// DEL: removes everything of ours from `CNI_NETNS` with every backend (`clean`), whatever the
/// configuration asks for. The only settings it reads are those that say which objects are
/// ours (the TPROXY mark and table, the `-c`/`-k` interfaces), and only when they are valid;
/// anything else in the configuration (interception settings, unknown keys, `kubernetes`) is
/// ignored. A missing, empty or vanished namespace is success, as is a second DEL.
fn del(inv: &Invocation, host: &dyn Host, input: &[u8]) -> Result<(), CniError> {
    #[cfg(feature = "agent")]
    tell_the_agent(inv, input);
    let Some(netns) = &inv.netns else {
        logging::info("DEL without CNI_NETNS: the namespace is gone, nothing to remove");
        return Ok(());
    };
    if !Path::new(netns).exists() {
        logging::info(&format!("DEL: {netns} is gone, nothing to remove"));
        return Ok(());
    }
    let mut last = None;
    for mut flags in [conf::ownership_settings(input), Flags::default()] {
        in_pod(&mut flags, Some(netns.clone()));
        // Both families: a clean removes IPv6 rules whatever the pod's addresses are now.
        flags.set(&flags::ENABLE_IPV6.spec, "true");
        match run::execute(
            &Istio,
            &flags,
            Subcommand::Clean,
            &no_env(),
            host,
            &mut std::io::sink(),
        ) {
            Ok(()) => return Ok(()),
            Err(RunError::Netns(n)) if n.is_gone() => {
                logging::info(&format!("DEL: {netns} is gone, nothing to remove"));
                return Ok(());
            }
            // A value that does not parse names nothing of ours: clean with the defaults.
            Err(RunError::Config(e @ ConfigError::Invalid { .. })) => {
                logging::warn(&format!("DEL: ignoring the configuration's {e}"));
                last = Some(e.to_string());
            }
            Err(e) => return Err(run_error(e, code::RULES_FAILED, &[])),
        }
    }
    Err(CniError::new(
        code::RULES_FAILED,
        "removing the rules failed",
        last.unwrap_or_default(),
    ))
}

/// DEL with a node agent configured: it lets the pod go (ztunnel's Del, the probe set) if it
/// enrolled it. Whatever happens, DEL goes on.
#[cfg(feature = "agent")]
fn tell_the_agent(inv: &Invocation, input: &[u8]) {
    let Some(socket) = conf::ambient_agent_of(input) else {
        return;
    };
    let Ok(args) = inv.args() else { return };
    let (Some(ns), Some(name)) = (args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")) else {
        return;
    };
    ambient::del(
        &socket,
        crate::agent::events::PodEvent {
            namespace: ns.clone(),
            name: name.clone(),
            netns: inv.netns.clone().unwrap_or_default(),
            ips: Vec::new(),
            container_id: inv.container_id.clone().unwrap_or_default(),
        },
    );
}

fn check(inv: &Invocation, host: &dyn Host, conf: &NetConf) -> Result<(), CniError> {
    if conf.prev_result.is_none() {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "prevResult is missing (CHECK is given the result of ADD)",
        ));
    }
    match plan_for(inv, conf)? {
        Intent::Skip(why) => {
            logging::info(&format!("nothing to check: {why}"));
            Ok(())
        }
        Intent::Ambient { pod, .. } => {
            logging::info(&format!(
                "nothing to check here: ambient pod {}/{} is checked by the node agent",
                pod.metadata.namespace, pod.metadata.name
            ));
            Ok(())
        }
        Intent::Program { flags, from_pod } => run::execute(
            &Istio,
            &flags,
            Subcommand::Check,
            &no_env(),
            host,
            &mut std::io::sink(),
        )
        .map_err(|e| run_error(e, code::CHECK_FAILED, &from_pod)),
    }
}

/// Whether ADD could work now: the kubeconfig is usable, and the backend's tools exist.
pub(crate) fn status(conf: &NetConf) -> Result<(), CniError> {
    status_of_settings(conf)?;
    let native = conf
        .flags
        .get(&flags::NATIVE_NFTABLES.spec)
        .and_then(parse_bool)
        == Some(true);
    if !native && crate::backend::iptables::machine::which("iptables-restore").is_none() {
        return Err(CniError::new(
            code::NOT_AVAILABLE,
            "the plugin is not available",
            "no iptables-restore in PATH (set native-nftables, which needs no binaries)",
        ));
    }
    Ok(())
}

/// The part of STATUS that depends on the configuration alone (its kubeconfig loads), not on
/// the machine's tools: what the installer's readiness can judge from inside its container,
/// where the host's PATH is not.
pub(crate) fn status_of_settings(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |details: String| {
        CniError::new(code::NOT_AVAILABLE, "the plugin is not available", details)
    };
    if let Some(k) = &conf.kubernetes {
        #[cfg(feature = "kubernetes")]
        kube::Client::from_kubeconfig(&k.kubeconfig).map_err(|e| unavailable(e.to_string()))?;
        #[cfg(not(feature = "kubernetes"))]
        return Err(unavailable(format!(
            "{}: {}",
            k.kubeconfig.display(),
            no_kubernetes().details
        )));
    }
    Ok(())
}
