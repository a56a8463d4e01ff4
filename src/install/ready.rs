//! `meshtables cni-ready`: the installer's readiness, as an exec probe of the same binary with
//! the same settings (the DaemonSet's environment). It reads the live state, not the
//! installer's memory, and opens no port: it answers even while the installer is busy, and
//! no one on the network can stall it. Ready means every part a pod's ADD needs is whole:
//!
//! - the network the runtime uses (the same choice as the installer's) ends its chain with
//!   exactly this installer's entry, in a CNI version the plugin serves;
//! - the plugin binary in the runtime's plugin directory is this binary, byte for byte, and
//!   executable;
//! - the plugin's kubeconfig is what the service account makes now;
//! - the plugin's own STATUS passes as far as the settings decide it (its kubeconfig loads;
//!   the host's iptables binaries are not in this container to look at).

use super::installer::chosen;
use super::settings::{Settings, as_plugin_conf, entry, entry_with};
use super::{conflist, files, kubeconfig, view};
use crate::profile::istio::config::EnvSource;

/// Why the installation is not whole, or what is ready.
pub fn inspect(s: &Settings, env: &dyn EnvSource) -> Result<String, String> {
    let entry = entry(s).map_err(|e| e.to_string())?;
    let survey = view::Survey::read(&s.conf_dir, &s.host_conf_dir)
        .map_err(|e| format!("reading {}: {e}", s.conf_dir.display()))?;
    let file = chosen(&survey, s)?;
    match conflist::insert(file.bytes(), &entry) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return Err(format!(
                "the chain of {} does not end with this installer's meshtables-cni entry",
                file.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", file.display())),
    }
    let binary = s.bin_dir.join(conflist::TYPE);
    let me = std::fs::read("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    if !files::same_bytes(&binary, &me) {
        return Err(format!(
            "{} is missing or not this binary",
            binary.display()
        ));
    }
    if !files::is_executable(&binary) {
        return Err(format!("{} is not executable", binary.display()));
    }
    let local_kubeconfig = s.conf_dir.join(&s.kubeconfig_name);
    if s.kubernetes {
        let want = kubeconfig::make(&s.sa_dir, env).map_err(|e| e.to_string())?;
        if files::read(&local_kubeconfig).ok() != Some(want) {
            return Err(format!(
                "{} is missing or not what the service account makes",
                local_kubeconfig.display()
            ));
        }
    }
    // The plugin's STATUS, on the entry as this process sees its files; the host's tools
    // (iptables-restore) are the host's, not in this container's PATH.
    let local = entry_with(s, &local_kubeconfig).map_err(|e| e.to_string())?;
    let conf = as_plugin_conf(&local)?;
    crate::cni::status_of_settings(&conf)
        .map_err(|e| format!("the plugin's STATUS fails: {}", e.details))?;
    let agent = if s.ambient_enabled {
        agent_answers(s)?;
        ", and the node agent answers"
    } else {
        ""
    };
    Ok(format!(
        "ready: the chain of {} ends with meshtables-cni, and its binary and kubeconfig are whole{agent}",
        file.display()
    ))
}

/// The node agent answers a ping on the plugin's socket: it started, installed the node's
/// rules and reconciled the pods it found, so an ambient pod's ADD can be served.
fn agent_answers(s: &Settings) -> Result<(), String> {
    #[cfg(feature = "agent")]
    {
        use crate::agent::events::{Empty, Request, call};
        let socket = super::settings::agent_socket(s);
        call(
            &socket,
            &Request::Ping(Empty {}),
            std::time::Duration::from_secs(2),
        )
        .map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "agent"))]
    {
        let _ = s;
        Err("this build has no node agent".into())
    }
}
