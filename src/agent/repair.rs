//! Sidecar repair: a pod with Istio's sidecar that relies on the CNI plugin (it has the
//! `istio-validation` init container, not `istio-init`) but started while the plugin was not
//! in the chain (an upgrade, a repair of the chain) has no interception rules, and its
//! `istio-validation` fails until someone deletes the pod. istio-cni's repair controller
//! deletes or labels such pods. This one repairs them in place: it finds the pod's namespace
//! (the /proc scan), checks the rules the plugin's ADD would have written (the same settings:
//! the plugin's entry and the pod's annotations, `cni::sidecar_flags`) with the engine's
//! `check`, and writes them when they are not there. The next try of `istio-validation`
//! passes.

use std::net::IpAddr;
use std::path::Path;

use crate::cni::conf::NetConf;
use crate::cni::pod::Pod;
use crate::logging;
use crate::options::Subcommand;
use crate::profile::istio::Istio;
use crate::profile::istio::flags as istio;

const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
const VALIDATION: &str = "istio-validation";

/// Whether `pod` is a sidecar pod whose rules are the plugin's to write and that is stuck
/// before its containers: its sandbox is up (it has addresses) but its init containers have
/// not all passed (phase `Pending`), as when `istio-validation` keeps failing. A `Running`
/// pod has passed its validation, so the look (a /proc scan and a netlink dump) is spent
/// only on pods that may need it.
pub fn relies_on_the_plugin(pod: &Pod) -> bool {
    pod.metadata.annotations.contains_key(SIDECAR_STATUS)
        && !pod.spec.host_network
        && pod.metadata.deletion_timestamp.is_none()
        && pod.status.phase == "Pending"
        && !pod.status.pod_ips.is_empty()
        && pod
            .spec
            .init_containers
            .iter()
            .any(|c| c.name == VALIDATION)
}

/// What a repair look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The rules are in place.
    InPlace,
    /// They were not; they are now.
    Repaired,
    /// Istio's semantics leave this pod alone.
    NotOurs,
}

/// Checks a sidecar pod's rules in the namespace `netns` (its path, e.g. `/proc/self/fd/N`)
/// and writes them when they are not there.
pub fn repair(
    plugin: &NetConf,
    pod: &Pod,
    netns: &Path,
    ips: &[IpAddr],
) -> Result<Outcome, String> {
    let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
    let ipv6 = (!ips.is_empty()).then(|| ips.iter().any(IpAddr::is_ipv6));
    let Some(mut flags) = crate::cni::sidecar_flags(plugin, pod, netns.display().to_string(), ipv6)
        .map_err(|e| format!("pod {id}: {}: {}", e.msg, e.details))?
    else {
        return Ok(Outcome::NotOurs);
    };
    let run = |flags: &crate::flags::Flags, sub| {
        crate::run::execute(
            &Istio,
            flags,
            sub,
            &std::collections::HashMap::new(),
            &crate::host::System,
            &mut Vec::new(),
        )
    };
    if logging::quieter(logging::Level::Warn, || run(&flags, Subcommand::Check)).is_ok() {
        return Ok(Outcome::InPlace);
    }
    // Rules of an earlier version, or half of them: the plugin's are replaced.
    flags.set(&istio::RECONCILE.spec, "true");
    run(&flags, Subcommand::Apply)
        .map_err(|e| format!("pod {id}: writing its sidecar rules: {e}"))?;
    logging::info(&format!(
        "pod {id}: its sidecar's interception rules were not in place (it started while the plugin was not in the chain?); written, so istio-validation passes on its next try"
    ));
    Ok(Outcome::Repaired)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use serde_json::json;

    fn pod(phase: &str, ips: bool, init: &str, host_network: bool) -> Pod {
        let ips = if ips {
            json!([{"ip": "10.244.1.5"}])
        } else {
            json!([])
        };
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {SIDECAR_STATUS: "{}"}},
            "spec": {"hostNetwork": host_network, "initContainers": [{"name": init}]},
            "status": {"phase": phase, "podIPs": ips}
        }))
        .unwrap()
    }

    #[test]
    fn only_pending_cni_sidecar_pods_with_a_sandbox_are_looked_at() {
        assert!(relies_on_the_plugin(&pod(
            "Pending", true, VALIDATION, false
        )));
        // Running: its validation passed. No address: no sandbox yet (the ADD is running).
        assert!(!relies_on_the_plugin(&pod(
            "Running", true, VALIDATION, false
        )));
        assert!(!relies_on_the_plugin(&pod(
            "Pending", false, VALIDATION, false
        )));
        // istio-init programs its own pod; a host-network pod has nothing to intercept.
        assert!(!relies_on_the_plugin(&pod(
            "Pending",
            true,
            "istio-init",
            false
        )));
        assert!(!relies_on_the_plugin(&pod(
            "Pending", true, VALIDATION, true
        )));
        let mut no_sidecar = pod("Pending", true, VALIDATION, false);
        no_sidecar.metadata.annotations.clear();
        assert!(!relies_on_the_plugin(&no_sidecar));
    }
}
