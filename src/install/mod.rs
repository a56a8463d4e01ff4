//! `meshtables cni-install`: the long-running process of a DaemonSet that installs the CNI
//! plugin on its node and keeps it installed (`deploy/`), and `meshtables cni-ready`, its
//! readiness probe.
//!
//! On start it announces itself among the node's installers (`presence`), copies its own binary
//! into the runtime's plugin directory as `meshtables-cni`, writes the plugin's kubeconfig from
//! its service account, and puts the plugin last in the chain of the network the runtime uses
//! (`view`: the first file that loads, as libcni and the runtimes decide), waiting for one if
//! there is none yet. Then it watches the directories (inotify) and, every second anyway,
//! checks the binary, the kubeconfig and the chain, and puts back what is missing. Every write
//! to a file another program writes compares before it replaces (`files`): the primary
//! plugin's last write always wins, and our entry is added to it.
//!
//! When a newer installer runs on the node (an upgrade's new pod), this one stands by: it
//! writes nothing, and at SIGTERM leaves everything installed. The last installer to stop
//! (with `--uninstall`, the default) takes the entry out of every file that holds it (a file
//! comes back byte for byte from its backup when it is exactly that backup plus our entry; a
//! converted `.conf` comes back as it was), then removes the kubeconfig and the binary.

pub mod conflist;
mod error;
mod files;
pub mod gojson;
mod installer;
pub(crate) mod kubeconfig;
pub mod libcni;
mod presence;
pub mod ready;
mod settings;
mod view;
mod watch;

pub use error::InstallError;
pub use installer::{Installer, Pass, State};
pub use settings::{Settings, entry, settings};

use crate::profile::istio::config::EnvSource;

/// Runs the installer until SIGTERM or SIGINT.
/// With `--ambient-enabled`, the node agent starts first and runs until the installer stops:
/// the plugin's entry names the agent's socket, so it must answer before the entry exists.
pub fn run(s: Settings, env: &dyn EnvSource) -> Result<(), InstallError> {
    #[cfg(feature = "agent")]
    let _agent = if s.ambient_enabled {
        Some(start_agent(&s)?)
    } else {
        None
    };
    let mut inst = installer::Installer::new(s)?;
    watch::serve(&mut inst, env)
}

#[cfg(feature = "agent")]
fn start_agent(s: &Settings) -> Result<crate::agent::node::Running, InstallError> {
    let cfg = crate::agent::node::Config {
        zds_socket: s.ztunnel_uds_address.clone(),
        run_dir: s.cni_agent_run_dir.clone(),
        sa_dir: s.sa_dir.clone(),
        scope: crate::agent::eligible::Scope {
            system_namespace: s.pod_namespace.clone(),
            exclude_namespaces: s.exclude_namespaces.clone(),
            selectors: s.enablement_selectors.clone(),
        },
        node_name: s.node_name.clone(),
        metrics: s.metrics_address,
        sidecar_repair: match &s.repair {
            None => None,
            Some(settings::RepairMode::InPlace) => {
                let entry = settings::entry(s)?;
                let plugin = settings::as_plugin_conf(&entry).map_err(InstallError::Entry)?;
                Some(crate::agent::repair::Action::InPlace(Box::new(plugin)))
            }
            Some(settings::RepairMode::Delete) => Some(crate::agent::repair::Action::Delete),
            Some(settings::RepairMode::Label { key, value }) => {
                Some(crate::agent::repair::Action::Label {
                    key: key.clone(),
                    value: value.clone(),
                })
            }
        },
        drift_interval: (s.drift_check_interval > 0)
            .then(|| std::time::Duration::from_secs(s.drift_check_interval)),
    };
    // Variables that are not UTF-8 are no setting of ours (and `vars()` would panic on them).
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    crate::agent::node::start(&cfg, env).map_err(|e| InstallError::Agent(e.to_string()))
}
