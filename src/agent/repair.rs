//! Sidecar repair: a pod with Istio's sidecar that relies on the CNI plugin (it has the
//! `istio-validation` init container, not `istio-init`) but started while the plugin was not
//! in the chain (an upgrade, a repair of the chain) has no interception rules, and its
//! `istio-validation` fails until someone deletes the pod. istio-cni's repair controller
//! (cni/pkg/repair) has three modes for such a pod, and so has this (`Action`; which one is
//! `install::settings::RepairMode`'s decision):
//!
//! - in place (the default, upstream's `repairPods`): it finds the pod's namespace (the /proc
//!   scan), checks the rules the plugin's ADD would have written (the same settings: the
//!   plugin's entry and the pod's annotations, `cni::sidecar_flags`) with the engine's
//!   `check`, and writes them when they are not there. The next try of `istio-validation`
//!   passes. What is broken is what the check finds missing (`relies_on_the_plugin` only
//!   picks the pods worth a look).
//! - delete (`deletePods`) and label (`labelPods`): what is broken is what upstream's
//!   `matchesFilter` says (`broken`): `istio-validation`'s last run ended with exit code 126
//!   (upstream's `REPAIR_INIT_CONTAINER_EXIT_CODE` default, istio-validation's failure code)
//!   and it has not passed since. The pod is deleted with its uid and resourceVersion as
//!   preconditions, or labelled through pods/status; a pod that has the label's key already is
//!   skipped, as upstream's. Unlike upstream, a pod already being deleted
//!   (`deletionTimestamp`) is left alone in every mode: upstream would DELETE it again at each
//!   change of its status while it terminates, which changes nothing.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;

use crate::cni::conf::NetConf;
use crate::cni::kube::{Client, KubeError, PatchError};
use crate::cni::pod::Pod;
use crate::logging;
use crate::options::Subcommand;
use crate::profile::istio::Istio;
use crate::profile::istio::flags as istio;
use crate::values::{LabelKey, LabelValue, NamespaceName, PodName};

const SIDECAR_STATUS: &str = "sidecar.istio.io/status";
const VALIDATION: &str = "istio-validation";
/// istio-validation's exit code when the redirection it probes is not there (upstream's
/// `ValidationErrorCode`, the default of `REPAIR_INIT_CONTAINER_EXIT_CODE`).
const VALIDATION_FAILED: i32 = 126;

/// What is done with a sidecar pod that started while the plugin was not in the chain.
#[derive(Debug, Clone)]
pub enum Action {
    /// Its rules are checked and written in place, with the plugin's configuration.
    InPlace(Box<NetConf>),
    /// It is deleted, to be created again.
    Delete,
    /// It is labelled `key=value`.
    Label { key: LabelKey, value: LabelValue },
}

/// Whether `pod` is broken as istio-cni's repair controller tells (`matchesFilter`, with
/// its defaults: the `sidecar.istio.io/status` annotation, the `istio-validation` init
/// container, exit code 126, any termination message): its `istio-validation` last ended
/// with 126 and has not passed since (a current state that ended with 0 or `Completed` is
/// never broken, whatever came before). A pod already being deleted is not (see the module).
pub fn broken(pod: &Pod) -> bool {
    if !pod.metadata.annotations.contains_key(SIDECAR_STATUS)
        || pod.metadata.deletion_timestamp.is_some()
    {
        return false;
    }
    pod.status
        .init_container_statuses
        .iter()
        .filter(|c| c.name == VALIDATION)
        .any(|c| {
            let passed = c
                .state
                .terminated
                .as_ref()
                .is_some_and(|t| t.reason == "Completed" || t.exit_code == 0);
            let failed = c
                .last_state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == VALIDATION_FAILED);
            !passed && failed
        })
}

/// Broken pods deleted or labelled, skipped, and failed, since start (the metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub deleted: u64,
    pub labelled: u64,
    /// Labelled already, gone, or changed since read (the next version decides).
    pub skipped: u64,
    /// The API server refused or could not be reached (logged).
    pub failed: u64,
}

/// The repair's `Tally`, shared by the watch and the metrics.
#[derive(Debug, Default)]
pub struct Counts(Mutex<Tally>);

impl Counts {
    pub fn get(&self) -> Tally {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn add(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// What a delete or label did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Deleted,
    Labelled,
    /// Nothing was needed or it could not apply (why, for the log).
    Skipped(String),
    /// The request failed; `api`: the API server could not be reached or refused us (an API
    /// error for the metrics), not the request itself.
    Failed {
        why: String,
        api: bool,
    },
}

/// Deletes or labels the broken sidecar pod `pod` (`Action::Delete`, `Action::Label`; for
/// `InPlace` nothing happens here), counts it in `counts` and logs it.
pub fn act(kube: &Client, action: &Action, pod: &Pod, counts: &Counts) -> Done {
    let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
    let names = NamespaceName::parse(&pod.metadata.namespace)
        .and_then(|ns| Ok((ns, PodName::parse(&pod.metadata.name)?)));
    let (ns, name) = match names {
        Ok(n) => n,
        Err(e) => {
            let why = format!("pod {id}: its name {e}");
            counts.add(|t| t.failed += 1);
            logging::warn(&why);
            return Done::Failed { why, api: false };
        }
    };
    let done = match action {
        Action::InPlace(_) => return Done::Skipped("repaired in place, not here".into()),
        Action::Delete => {
            logging::info(&format!(
                "pod {id}: its istio-validation failed with {VALIDATION_FAILED} (it started while the plugin was not in the chain?); deleting it, to be created again"
            ));
            let r = kube.delete_pod(
                &ns,
                &name,
                &pod.metadata.uid,
                &pod.metadata.resource_version,
            );
            outcome(&id, r, Done::Deleted)
        }
        Action::Label { key, value } => {
            if pod.metadata.labels.contains_key(key.as_str()) {
                Done::Skipped(format!("pod {id}: labelled {key} already"))
            } else {
                logging::info(&format!(
                    "pod {id}: its istio-validation failed with {VALIDATION_FAILED} (it started while the plugin was not in the chain?); labelling it {key}={value}"
                ));
                let r = kube.label_pod(&ns, &name, &pod.metadata.uid, key, value);
                outcome(&id, r, Done::Labelled)
            }
        }
    };
    counts.add(|t| match &done {
        Done::Deleted => t.deleted += 1,
        Done::Labelled => t.labelled += 1,
        Done::Skipped(_) => t.skipped += 1,
        Done::Failed { .. } => t.failed += 1,
    });
    match &done {
        Done::Deleted | Done::Labelled => {}
        Done::Skipped(why) => logging::debug(why),
        Done::Failed { why, .. } => logging::warn(why),
    }
    done
}

/// A write's result as `Done`: gone (404) or changed since read (409: a precondition, or a
/// pod of the same name since; 422: the uid in a label patch) is skipped, the pod's next
/// version deciding; the rest failed.
fn outcome(id: &str, r: Result<(), PatchError>, ok: Done) -> Done {
    match r {
        Ok(()) => ok,
        Err(PatchError::Kube(KubeError::NotFound(_))) => {
            Done::Skipped(format!("pod {id}: gone already"))
        }
        Err(e @ PatchError::Refused { .. }) => Done::Skipped(format!(
            "pod {id}: changed since it was read, its next version decides: {e}"
        )),
        Err(PatchError::Kube(e)) => Done::Failed {
            why: format!("pod {id}: {e}"),
            api: true,
        },
    }
}

/// Whether `pod` is a sidecar pod whose rules are the plugin's to write and that is stuck
/// before its containers: its sandbox is up (it has addresses) but its init containers have
/// not all passed (phase `Pending`), as when `istio-validation` keeps failing. A `Running`
/// pod has passed its validation, so the look (a /proc scan and a netlink dump) is spent
/// only on pods that may need it.
pub fn relies_on_the_plugin(pod: &Pod) -> bool {
    rules_are_the_plugins(pod) && pod.status.phase == "Pending"
}

/// Whether `pod`'s interception rules are the plugin's to write (a sidecar injected for CNI:
/// `istio-validation`, not `istio-init`) and it has a sandbox with addresses, not going away:
/// what the drift pass checks, running or not.
pub fn rules_are_the_plugins(pod: &Pod) -> bool {
    pod.metadata.annotations.contains_key(SIDECAR_STATUS)
        && !pod.spec.host_network
        && pod.metadata.deletion_timestamp.is_none()
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
        crate::run::execute_with(
            &Istio,
            flags,
            sub,
            &std::collections::HashMap::new(),
            &crate::host::System,
            &mut Vec::new(),
            crate::run::Waits::agent(),
        )
    };
    if logging::quieter(logging::Level::Warn, || run(&flags, Subcommand::Check)).is_ok() {
        return Ok(Outcome::InPlace);
    }
    // The same rules in the other backend: written by an earlier entry of the plugin (before
    // NATIVE_NFTABLES was turned on or off, or upstream's istio-cni before the switch). They
    // intercept; a second set from us beside them would be two owners' rules in one pod.
    let other = other_backend(&flags);
    if logging::quieter(logging::Level::None, || run(&other, Subcommand::Check)).is_ok() {
        logging::debug(&format!(
            "pod {id}: its sidecar's interception rules are in place in the other backend (an earlier plugin entry's); left as they are"
        ));
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

/// `flags` for the other backend: nftables for iptables, iptables (the variant found, as
/// upstream detects it) for nftables.
fn other_backend(flags: &crate::flags::Flags) -> crate::flags::Flags {
    let mut other = flags.clone();
    let native = other
        .get(&istio::NATIVE_NFTABLES.spec)
        .and_then(crate::values::parse_bool)
        == Some(true);
    other.set(&istio::NATIVE_NFTABLES.spec, (!native).to_string());
    other.unset(&istio::FORCE_IPTABLES_BINARY.spec);
    other
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

    /// A sidecar pod whose istio-validation is now `state` after a run that ended `last`.
    fn validated(state: serde_json::Value, last: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "annotations": {SIDECAR_STATUS: "{}"}},
            "spec": {"initContainers": [{"name": VALIDATION}]},
            "status": {"phase": "Pending", "initContainerStatuses": [
                {"name": VALIDATION, "state": state, "lastState": last}]}
        }))
        .unwrap()
    }

    fn ended(code: i32) -> serde_json::Value {
        json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}})
    }

    fn backing_off() -> serde_json::Value {
        json!({"waiting": {"reason": "CrashLoopBackOff"}})
    }

    #[test]
    fn broken_is_validation_last_failing_with_126_as_upstream() {
        // Upstream's brokenPodWaiting and brokenPodTerminating.
        assert!(broken(&validated(backing_off(), ended(126))));
        assert!(broken(&validated(ended(126), ended(126))));
        // Another exit code; never run before; passed now (after failing).
        assert!(!broken(&validated(backing_off(), ended(1))));
        assert!(!broken(&validated(json!({"running": {}}), json!({}))));
        assert!(!broken(&validated(ended(0), ended(126))));
    }

    #[test]
    fn broken_needs_the_sidecar_annotation_and_a_pod_not_being_deleted() {
        let mut p = validated(backing_off(), ended(126));
        p.metadata.annotations.clear();
        assert!(!broken(&p));
        let mut p = validated(backing_off(), ended(126));
        p.metadata.deletion_timestamp = Some("2024-01-01T00:00:00Z".into());
        assert!(!broken(&p));
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
