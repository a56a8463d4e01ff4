//! The agent as the DaemonSet's process runs it, beside the installer (`cni-install
//! --ambient-enabled`): the node's probe rules first (istio-cni installs them at start), then
//! the ZDS socket for ztunnel, then the socket the plugin's ADD and DEL talk to. The agent's
//! kubeconfig reads the service account's token and CA from their projected files at every
//! request, so a rotated token is picked up without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::eligible::Scope;
use super::enrol::Agent;
use super::events::{self, Listener};
use super::server::{Deadlines, ZdsServer};
use super::watch::Watcher;
use crate::options::Subcommand;

/// What the agent needs from the installer's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// ztunnel's socket (`ZTUNNEL_UDS_ADDRESS`).
    pub zds_socket: PathBuf,
    /// Where the plugin's socket and the agent's kubeconfig live (`CNI_AGENT_RUN_DIR`): a
    /// host directory mounted at the same path, since the plugin connects from the host.
    pub run_dir: PathBuf,
    /// The service account's projected token and CA.
    pub sa_dir: PathBuf,
    pub scope: Scope,
    /// This node's name (`NODE_NAME`): whose pods are watched.
    pub node_name: String,
    /// Where to serve the metrics, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// What is done with a broken sidecar pod (with the plugin's configuration, its entry in
    /// the chain, for the in-place repair), if anything.
    pub sidecar_repair: Option<super::repair::Action>,
    /// How often every enrolled pod's rules and the node's are checked (none: never).
    pub drift_interval: Option<std::time::Duration>,
}

impl Config {
    /// The plugin's socket: what the installer writes into the plugin's entry.
    pub fn plugin_socket(&self) -> PathBuf {
        self.run_dir.join(events::SOCKET_NAME)
    }
}

/// The running agent; dropping it closes both sockets.
pub struct Running {
    pub agent: Arc<Agent>,
    _listener: Listener,
}

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the node's probe rules: {0}")]
    HostRules(String),
    #[error("{0}")]
    Zds(#[from] super::server::ZdsError),
    #[error("{0}")]
    Listen(#[from] events::ListenError),
    #[error("the agent's kubeconfig {path}: {problem}")]
    Kubeconfig { path: PathBuf, problem: String },
    #[error("the metrics address {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the agent's run directory {path}: {source}")]
    RunDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Starts the agent: host rules, ZDS, the plugin's socket. `env` is the process's
/// environment (the ambient engine's settings, the API server's address).
pub fn start(cfg: &Config, env: HashMap<String, String>) -> Result<Running, StartError> {
    raise_fd_limit();
    super::enrol::host_rules(&env, Subcommand::Apply).map_err(StartError::HostRules)?;
    std::fs::create_dir_all(&cfg.run_dir).map_err(|source| StartError::RunDir {
        path: cfg.run_dir.clone(),
        source,
    })?;
    let kubeconfig = write_kubeconfig(cfg, &env)?;
    let kube = crate::cni::kube::Client::from_kubeconfig(&kubeconfig).map_err(|e| {
        StartError::Kubeconfig {
            path: kubeconfig.clone(),
            problem: e.to_string(),
        }
    })?;
    if let Some(dir) = cfg.zds_socket.parent() {
        std::fs::create_dir_all(dir).map_err(|source| StartError::RunDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let watch_client = crate::cni::kube::Client::from_kubeconfig(&kubeconfig).map_err(|e| {
        StartError::Kubeconfig {
            path: kubeconfig.clone(),
            problem: e.to_string(),
        }
    })?;
    // ztunnel may connect at once; its snapshot waits for the reconcile below.
    let zds = ZdsServer::bind_closed(&cfg.zds_socket, Deadlines::default())?;
    let agent = Arc::new(Agent::new(zds, kube, cfg.scope.clone(), env));
    let listener = Listener::bind(&cfg.plugin_socket(), agent.clone())?;
    let repairs = Arc::new(super::repair::Counts::default());
    let watcher = Arc::new(Watcher::new(
        &agent,
        watch_client,
        cfg.node_name.clone(),
        super::watch::proc_root().to_path_buf(),
        cfg.sidecar_repair.clone(),
        repairs.clone(),
    ));
    let for_drift = watcher.clone();
    let a = Arc::downgrade(&agent);
    std::thread::Builder::new()
        .name("agent-watch".into())
        .spawn(move || start_watching(&a, &watcher))
        .map_err(|source| StartError::RunDir {
            path: cfg.run_dir.clone(),
            source,
        })?;
    if let Some(addr) = cfg.metrics {
        let bound = super::metrics::serve(addr, Arc::downgrade(&agent), repairs)
            .map_err(|source| StartError::Metrics { addr, source })?;
        crate::logging::info(&format!("node agent: metrics on http://{bound}/metrics"));
    }
    if let Some(every) = cfg.drift_interval {
        let a = Arc::downgrade(&agent);
        std::thread::Builder::new()
            .name("agent-drift".into())
            .spawn(move || drift_loop(&a, &for_drift, every))
            .map_err(|source| StartError::RunDir {
                path: cfg.run_dir.clone(),
                source,
            })?;
    }
    crate::logging::info(&format!(
        "node agent: ztunnel's socket {}, the plugin's {}",
        cfg.zds_socket.display(),
        cfg.plugin_socket().display()
    ));
    Ok(Running {
        agent,
        _listener: listener,
    })
}

/// Raises the soft limit of open files to the hard one. Each enrolled pod holds two fds
/// (the agent's and the ZDS server's copy for snapshots), and a container's soft limit is
/// often 1024 (containerd 2 no longer raises it): a node of 500 pods would refuse the rest
/// with EMFILE. Go raises it at start for istio-cni's agent; we do it here. Children (the
/// iptables tools) get only their standard fds, so a larger limit changes nothing for them.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => crate::logging::debug(&format!(
                "node agent: open files limit raised from {soft} to {hard}"
            )),
            Err(e) => crate::logging::warn(&format!(
                "node agent: raising the open files limit from {soft} to {hard}: {e}; each enrolled pod holds two"
            )),
        },
        Ok(_) => {}
        Err(e) => crate::logging::warn(&format!("node agent: reading the open files limit: {e}")),
    }
}

/// A kubeconfig naming the service account's files (not copies): the API server from
/// `KUBERNETES_SERVICE_HOST`/`PORT`, as the plugin's.
fn write_kubeconfig(cfg: &Config, env: &HashMap<String, String>) -> Result<PathBuf, StartError> {
    let path = cfg.run_dir.join("agent.kubeconfig");
    let fail = |problem: String| StartError::Kubeconfig {
        path: path.clone(),
        problem,
    };
    let server = crate::install::kubeconfig::server(env).map_err(|e| fail(e.to_string()))?;
    let file = |name: &str| -> String { abs(&cfg.sa_dir.join(name)) };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server,
            "certificate-authority": file("ca.crt"),
        }}],
        "users": [{"name": "meshtables-agent", "user": {"tokenFile": file("token")}}],
        "contexts": [{"name": "meshtables-agent", "context": {"cluster": "local", "user": "meshtables-agent"}}],
        "current-context": "meshtables-agent",
    });
    let bytes = serde_json::to_vec_pretty(&config).map_err(|e| fail(e.to_string()))?;
    // Ours alone (one agent per node; a second during an upgrade writes the same bytes):
    // written under a unique name and renamed, so a reader never sees half of it.
    let tmp = cfg.run_dir.join(format!(
        ".agent.kubeconfig.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail(e.to_string())
        })?;
    Ok(path)
}

fn abs(p: &Path) -> String {
    p.display().to_string()
}

/// The start-up reconcile, retried until the API server answers (ztunnel's snapshot and
/// readiness wait for it), then the watches.
fn start_watching(agent: &std::sync::Weak<Agent>, watcher: &Arc<Watcher>) {
    let mut wait = std::time::Duration::from_millis(500);
    let (pods_rv, ns_rv) = loop {
        match watcher.reconcile(true) {
            Ok(v) => break v,
            Err(e) => {
                crate::logging::warn(&format!(
                    "start-up reconcile: {e}; ztunnel's snapshot and readiness wait; retrying in {wait:?}"
                ));
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_secs(30));
            }
        }
    };
    let Some(a) = agent.upgrade() else { return };
    a.zds.open();
    a.set_ready();
    crate::logging::info(&format!(
        "start-up reconcile done: {} pod(s) enrolled on this node; ztunnel's snapshot goes",
        a.enrolled().len()
    ));
    drop(a);
    let w = watcher.clone();
    let spawned = std::thread::Builder::new()
        .name("agent-watch-ns".into())
        .spawn(move || w.watch_namespaces(ns_rv));
    if let Err(e) = spawned {
        crate::logging::error(&format!("the namespace watch did not start: {e}"));
    }
    watcher.watch_pods(pods_rv);
}

/// Every `every`, a drift pass, until the agent is dropped.
fn drift_loop(agent: &std::sync::Weak<Agent>, watcher: &Watcher, every: std::time::Duration) {
    loop {
        std::thread::sleep(every);
        let Some(a) = agent.upgrade() else { return };
        let start = std::time::Instant::now();
        let proc_root = super::watch::proc_root();
        let index = super::netns_scan::index(proc_root);
        let mut found = a.check_drift(proc_root, index.as_ref());
        if let Ok(index) = &index {
            watcher.check_kept(&a, index);
            found.sidecars += watcher.check_sidecars(&a, index);
        }
        crate::logging::debug(&format!(
            "drift pass: {} pod(s) and the node checked in {} ms",
            a.enrolled().len(),
            start.elapsed().as_millis()
        ));
        if found != super::enrol::Repairs::default() {
            crate::logging::info(&format!(
                "drift pass: {} node repair(s), {} pod repair(s), {} pod(s) enrolled again in a new namespace, {} sidecar pod(s) repaired, {} failure(s)",
                found.host, found.pod_rules, found.namespaces, found.sidecars, found.failed
            ));
        }
    }
}
