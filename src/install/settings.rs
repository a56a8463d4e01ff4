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
    /// Which pods are ambient (`AMBIENT_ENABLEMENT_SELECTOR`), for the agent and the plugin.
    pub enablement_selectors: crate::selector::EnablementSelectors,
    pub ztunnel_uds_address: PathBuf,
    pub cni_agent_run_dir: PathBuf,
    pub pod_namespace: String,
    pub drift_check_interval: u64,
    pub node_name: String,
    pub metrics_address: Option<std::net::SocketAddr>,
    /// What the agent does with a broken sidecar pod; `None`: nothing (`REPAIR_ENABLED`
    /// false, or every mode turned off).
    pub repair: Option<RepairMode>,
    pub log_level: crate::logging::Level,
    pub log_as_json: bool,
}

/// What the node agent does with a sidecar pod that started while the plugin was not in the
/// chain: istio-cni's repair controller's three modes (`RepairPods`, `DeletePods`,
/// `LabelPods`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairMode {
    /// Its missing rules are written in place (`--repair-repair-pods`).
    InPlace,
    /// It is deleted (`--repair-delete-pods`).
    Delete,
    /// It is labelled `key=value` (`--repair-label-pods`).
    Label {
        key: crate::values::LabelKey,
        value: crate::values::LabelValue,
    },
}

/// The one decision of the repair mode. Upstream's controller (cni/pkg/repair,
/// `ReconcilePod`) takes the first mode that is on of repair, delete, label; so does this.
/// Upstream's binary has no default for `REPAIR_REPAIR_PODS` (unset is false) while its chart
/// sets it true: here an unset `REPAIR_REPAIR_PODS` is true unless delete or label is on, so
/// both the chart's settings (repair true, delete true: repair) and the binary's (delete true
/// alone: delete) mean what they mean upstream, and no setting at all is the in-place repair.
/// The label's key and value are checked whatever the mode (a bad value is refused at start).
fn repair_mode(r: &Resolver) -> Result<Option<RepairMode>, ConfigError> {
    let key = r.get(&f::REPAIR_BROKEN_POD_LABEL_KEY)?;
    let value = r.get(&f::REPAIR_BROKEN_POD_LABEL_VALUE)?;
    let enabled = r.get(&f::REPAIR_ENABLED)?;
    let delete = r.get(&f::REPAIR_DELETE_PODS)?;
    let label = r.get(&f::REPAIR_LABEL_PODS)?;
    let repair = r
        .given(&f::REPAIR_REPAIR_PODS)?
        .unwrap_or(!delete && !label);
    let mode = if !enabled {
        None
    } else if repair {
        Some(RepairMode::InPlace)
    } else if delete {
        Some(RepairMode::Delete)
    } else if label {
        Some(RepairMode::Label { key, value })
    } else {
        None
    };
    Ok(mode)
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
        enablement_selectors: r.get(&f::AMBIENT_ENABLEMENT_SELECTOR)?,
        ztunnel_uds_address: r.get(&f::ZTUNNEL_UDS_ADDRESS)?,
        cni_agent_run_dir: r.get(&f::CNI_AGENT_RUN_DIR)?,
        pod_namespace: r.get(&f::POD_NAMESPACE)?,
        drift_check_interval: r.get(&f::DRIFT_CHECK_INTERVAL)?,
        node_name: r.get(&f::NODE_NAME)?,
        metrics_address: r.get(&f::METRICS_ADDRESS)?,
        repair: repair_mode(&r)?,
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
            k["enablement-selectors"] = s.enablement_selectors.to_json();
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use std::collections::HashMap;

    /// The repair mode the variables `vars` give.
    fn mode(vars: &[(&str, &str)]) -> Result<Option<RepairMode>, ConfigError> {
        let env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        repair_mode(&Resolver::new(&Flags::default(), &env))
    }

    fn label(key: &str, value: &str) -> Option<RepairMode> {
        Some(RepairMode::Label {
            key: crate::values::LabelKey::parse(key).unwrap(),
            value: crate::values::LabelValue::parse(value).unwrap(),
        })
    }

    #[test]
    fn in_place_is_the_default() {
        assert_eq!(mode(&[]).unwrap(), Some(RepairMode::InPlace));
    }

    #[test]
    fn delete_alone_deletes_as_upstreams_binary() {
        let m = mode(&[("REPAIR_DELETE_PODS", "true")]).unwrap();
        assert_eq!(m, Some(RepairMode::Delete));
    }

    #[test]
    fn label_alone_labels_with_upstreams_default_label() {
        let m = mode(&[("REPAIR_LABEL_PODS", "true")]).unwrap();
        assert_eq!(m, label("cni.istio.io/uninitialized", "true"));
    }

    #[test]
    fn repair_set_wins_over_delete_as_upstreams_chart() {
        let m = mode(&[
            ("REPAIR_REPAIR_PODS", "true"),
            ("REPAIR_DELETE_PODS", "true"),
        ]);
        assert_eq!(m.unwrap(), Some(RepairMode::InPlace));
    }

    #[test]
    fn delete_wins_over_label() {
        let m = mode(&[
            ("REPAIR_DELETE_PODS", "true"),
            ("REPAIR_LABEL_PODS", "true"),
        ]);
        assert_eq!(m.unwrap(), Some(RepairMode::Delete));
    }

    #[test]
    fn every_mode_off_or_repair_disabled_is_none() {
        assert_eq!(mode(&[("REPAIR_REPAIR_PODS", "false")]).unwrap(), None);
        assert_eq!(mode(&[("REPAIR_ENABLED", "false")]).unwrap(), None);
    }

    #[test]
    fn the_label_is_the_one_given() {
        let m = mode(&[
            ("REPAIR_LABEL_PODS", "true"),
            ("REPAIR_BROKEN_POD_LABEL_KEY", "example.com/broken"),
            ("REPAIR_BROKEN_POD_LABEL_VALUE", "yes"),
        ]);
        assert_eq!(m.unwrap(), label("example.com/broken", "yes"));
    }

    #[test]
    fn a_bad_label_key_names_its_variable() {
        let e = mode(&[("REPAIR_BROKEN_POD_LABEL_KEY", "bad key")]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("REPAIR_BROKEN_POD_LABEL_KEY"), "{text}");
        assert!(text.contains("bad key"), "{text}");
        assert!(text.contains("is not a label key"), "{text}");
    }
}
