//! The installer's settings (`flags::install`), resolved and checked, and the plugin entry
//! they make (checked by the plugin's own configuration parser).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::conflist;
use super::error::InstallError;
use super::kubeconfig;
use crate::flags::Flags;
use crate::flags::install as f;
use crate::profile::istio::config::{ConfigError, EnvSource, Origin, Resolver};

/// The installer's settings (`flags::install`), resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
    pub host_conf_dir: PathBuf,
    pub conf_name: Option<String>,
    pub kubeconfig_name: String,
    pub sa_dir: PathBuf,
    pub kubernetes: bool,
    pub exclude_namespaces: Vec<String>,
    pub native_nftables: bool,
    pub compact: bool,
    pub plugin_settings: Map<String, Value>,
    pub uninstall: bool,
    pub ambient_enabled: bool,
    pub ztunnel_uds_address: PathBuf,
    pub cni_agent_run_dir: PathBuf,
    pub pod_namespace: String,
    pub drift_check_interval: u64,
    pub node_name: String,
    pub metrics_address: Option<std::net::SocketAddr>,
    pub repair_enabled: bool,
    pub log_level: crate::logging::Level,
    pub log_as_json: bool,
}

/// Resolves the settings (command line, then env, then defaults), each value checked.
pub fn settings(flags: &Flags, env: &dyn EnvSource) -> Result<Settings, ConfigError> {
    let r = Resolver::new(flags, env);
    let name = r.get(&f::CNI_CONF_NAME)?;
    let plugin_settings = r.get(&f::PLUGIN_SETTINGS)?;
    if let Some(key) = plugin_settings
        .keys()
        .find(|k| crate::cni::conf::is_reserved(k))
    {
        return Err(ConfigError::Invalid {
            origin: r.origin(&f::PLUGIN_SETTINGS.spec),
            value: Value::Object(plugin_settings.clone()).to_string(),
            problem: format!(
                "sets {key:?}, which the installer or the runtime sets (only interception settings, by their long flag names)"
            ),
        });
    }
    let s = Settings {
        bin_dir: r.get(&f::CNI_BIN_DIR)?,
        conf_dir: r.get(&f::CNI_CONF_DIR)?,
        host_conf_dir: r.get(&f::HOST_CNI_CONF_DIR)?,
        conf_name: (!name.is_empty()).then_some(name),
        kubeconfig_name: r.get(&f::KUBECONFIG_NAME)?,
        sa_dir: r.get(&f::SERVICE_ACCOUNT_DIR)?,
        kubernetes: r.get(&f::KUBERNETES)?,
        exclude_namespaces: r.get(&f::EXCLUDE_NAMESPACES)?,
        native_nftables: r.get(&f::NATIVE_NFTABLES)?,
        compact: r.get(&f::COMPACT)?,
        plugin_settings,
        uninstall: r.get(&f::UNINSTALL)?,
        ambient_enabled: r.get(&f::AMBIENT_ENABLED)?,
        ztunnel_uds_address: r.get(&f::ZTUNNEL_UDS_ADDRESS)?,
        cni_agent_run_dir: r.get(&f::CNI_AGENT_RUN_DIR)?,
        pod_namespace: r.get(&f::POD_NAMESPACE)?,
        drift_check_interval: r.get(&f::DRIFT_CHECK_INTERVAL)?,
        node_name: r.get(&f::NODE_NAME)?,
        metrics_address: r.get(&f::METRICS_ADDRESS)?,
        repair_enabled: r.get(&f::REPAIR_ENABLED)?,
        log_level: r.get(&f::LOG_LEVEL)?,
        log_as_json: r.get(&f::LOG_AS_JSON)?,
    };
    if s.ambient_enabled && cfg!(not(feature = "agent")) {
        return Err(ConfigError::Invalid {
            origin: r.origin(&f::AMBIENT_ENABLED.spec),
            value: "true".into(),
            problem: "this build of meshtables has no node agent (cargo feature `agent`)".into(),
        });
    }
    if s.ambient_enabled && s.node_name.is_empty() {
        return Err(ConfigError::Invalid {
            origin: r.origin(&f::NODE_NAME.spec),
            value: String::new(),
            problem: "is required by --ambient-enabled (the agent watches this node's pods; set NODE_NAME from the downward API, spec.nodeName)".into(),
        });
    }
    if s.ambient_enabled && !s.kubernetes {
        return Err(ConfigError::Invalid {
            origin: r.origin(&f::AMBIENT_ENABLED.spec),
            value: "true".into(),
            problem: "needs --kubernetes (the agent reads pods and namespaces from the API server)"
                .into(),
        });
    }
    if s.kubernetes {
        // The API server the kubeconfig names: what the kubelet set must be usable.
        kubeconfig::server(env).map_err(|e| {
            let (var, value) = match &e {
                kubeconfig::KubeconfigError::BadPort { value, .. } => {
                    ("KUBERNETES_SERVICE_PORT", value.clone())
                }
                kubeconfig::KubeconfigError::BadHost(h) => ("KUBERNETES_SERVICE_HOST", h.clone()),
                _ => ("KUBERNETES_SERVICE_HOST", String::new()),
            };
            ConfigError::Invalid {
                origin: Origin::Env(var),
                value,
                problem: e.to_string(),
            }
        })?;
    }
    Ok(s)
}

/// The plugin's entry these settings make: the plugin's `type` and `name`, the chosen
/// settings, and the `kubernetes` section (with the kubeconfig at `kubeconfig`). Checked by
/// the plugin's own configuration parser, so a key it would refuse stops the installer instead
/// of every pod's ADD.
pub fn entry_with(s: &Settings, kubeconfig: &Path) -> Result<Map<String, Value>, InstallError> {
    let mut e = Map::new();
    e.insert("type".into(), conflist::TYPE.into());
    e.insert("name".into(), conflist::TYPE.into());
    if s.native_nftables {
        e.insert("native-nftables".into(), true.into());
    }
    if s.compact {
        e.insert("compact".into(), true.into());
    }
    for (k, v) in &s.plugin_settings {
        e.insert(k.clone(), v.clone());
    }
    if s.kubernetes {
        let mut k = serde_json::json!({
            "kubeconfig": kubeconfig.display().to_string(),
            "exclude-namespaces": s.exclude_namespaces,
        });
        if s.ambient_enabled {
            k["ambient-agent"] = agent_socket(s).display().to_string().into();
            k["system-namespace"] = s.pod_namespace.clone().into();
        }
        e.insert("kubernetes".into(), k);
    }
    let conf = as_plugin_conf(&e).map_err(|err| InstallError::Entry(err.to_string()))?;
    crate::cni::validate_settings(&conf)
        .map_err(|err| InstallError::Entry(format!("{}: {}", err.msg, err.details)))?;
    Ok(e)
}

/// The agent's socket for the plugin (the same path in the installer's container and on the
/// host: the run directory is mounted at its own path).
pub fn agent_socket(s: &Settings) -> PathBuf {
    #[cfg(feature = "agent")]
    let name = crate::agent::events::SOCKET_NAME;
    #[cfg(not(feature = "agent"))]
    let name = "agent.sock";
    s.cni_agent_run_dir.join(name)
}

/// The entry as the plugin parses it (in the newest version it speaks).
pub fn as_plugin_conf(e: &Map<String, Value>) -> Result<crate::cni::conf::NetConf, String> {
    let mut check = e.clone();
    let newest = crate::cni::conf::SUPPORTED_VERSIONS.last().copied();
    check.insert("cniVersion".into(), newest.unwrap_or("1.0.0").into());
    let bytes = serde_json::to_vec(&check).unwrap_or_default();
    crate::cni::conf::parse(&bytes).map_err(|err| format!("{}: {}", err.msg, err.details))
}

/// The entry written into the chain: the kubeconfig path as the host sees it.
pub fn entry(s: &Settings) -> Result<Map<String, Value>, InstallError> {
    entry_with(s, &s.host_conf_dir.join(&s.kubeconfig_name))
}
