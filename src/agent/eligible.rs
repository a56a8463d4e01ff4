//! Which pods are ambient: istio-cni's default enablement selectors (its chart's
//! `ambient.enablementSelectors`), its exclusions (host-network pods, pods with a sidecar,
//! ztunnel itself, excluded namespaces), and the `ambient.istio.io/redirection` annotation that
//! says how far a pod got. One decision, used by the plugin's ADD and by the agent, so the two
//! cannot disagree about a pod. Pure: typed objects in, a verdict out.

use std::collections::BTreeMap;

use crate::cni::pod::Pod;

/// The label that puts a pod (or every pod of a namespace) in ambient mode, or keeps it out.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// The annotation the agent writes through pods/status; istiod sends HBONE only to `enabled`.
pub const REDIRECTION: &str = "ambient.istio.io/redirection";
/// Rules are in the pod, ztunnel has not acked it yet: a removal must still undo the rules.
pub const PENDING: &str = "pending";
/// Rules in and ztunnel acked.
pub const ENABLED: &str = "enabled";

const SIDECAR_STATUS: &str = "sidecar.istio.io/status";

/// Where the agent runs and which namespaces it leaves alone.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Istio's namespace (`POD_NAMESPACE` of the DaemonSet): ztunnel's pods live there.
    pub system_namespace: String,
    pub exclude_namespaces: Vec<String>,
}

/// Whether a pod is ambient, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ambient,
    Not(String),
}

/// istio-cni's decision (`CompiledEnablementSelectors.Matches` with the chart's default
/// selectors, `IsZtunnelPod`, the excluded namespaces): a pod labelled
/// `istio.io/dataplane-mode=ambient`, or any pod not labelled `none` in a namespace labelled
/// `ambient`; never a host-network pod, a pod with a sidecar, or ztunnel.
pub fn verdict(pod: &Pod, namespace_labels: &BTreeMap<String, String>, scope: &Scope) -> Verdict {
    let m = &pod.metadata;
    if scope.exclude_namespaces.iter().any(|n| n == &m.namespace) {
        return Verdict::Not(format!("namespace {} is excluded", m.namespace));
    }
    if pod.spec.host_network {
        return Verdict::Not("it is on the host's network".into());
    }
    if m.annotations.contains_key(SIDECAR_STATUS) {
        return Verdict::Not(format!(
            "it has a sidecar ({SIDECAR_STATUS}); a pod is sidecar or ambient, not both"
        ));
    }
    if m.namespace == scope.system_namespace
        && m.labels.get("app").map(String::as_str) == Some("ztunnel")
    {
        return Verdict::Not("it is ztunnel".into());
    }
    let pod_mode = m.labels.get(DATAPLANE_MODE).map(String::as_str);
    let ns_mode = namespace_labels.get(DATAPLANE_MODE).map(String::as_str);
    match (pod_mode, ns_mode) {
        (Some("ambient"), _) => Verdict::Ambient,
        (Some("none"), _) => Verdict::Not(format!("it is labelled {DATAPLANE_MODE}=none")),
        (_, Some("ambient")) => Verdict::Ambient,
        _ => Verdict::Not(format!(
            "neither it nor its namespace is labelled {DATAPLANE_MODE}=ambient"
        )),
    }
}

/// Whether the pod's labels alone decide (so the plugin need not read its namespace): a pod
/// labelled `ambient` or `none`, a host-network pod, a pod with a sidecar.
pub fn decided_without_namespace(pod: &Pod) -> bool {
    let m = &pod.metadata;
    pod.spec.host_network
        || m.annotations.contains_key(SIDECAR_STATUS)
        || matches!(
            m.labels.get(DATAPLANE_MODE).map(String::as_str),
            Some("ambient" | "none")
        )
}

/// The pod's `ambient.istio.io/redirection` state, as the agent last wrote it.
pub fn redirection(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .get(REDIRECTION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn scope() -> Scope {
        Scope {
            system_namespace: "istio-system".into(),
            exclude_namespaces: vec!["kube-system".into()],
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plain(ns: &str, pod_labels: serde_json::Value) -> Pod {
        pod(json!({"metadata": {"name": "p", "namespace": ns, "labels": pod_labels}}))
    }

    #[test]
    fn a_pod_labelled_ambient_is_ambient_whatever_its_namespace() {
        let p = plain("shop", json!({DATAPLANE_MODE: "ambient"}));
        assert_eq!(verdict(&p, &labels(&[]), &scope()), Verdict::Ambient);
        assert!(decided_without_namespace(&p));
    }

    #[test]
    fn a_pod_in_an_ambient_namespace_is_ambient_unless_it_says_none() {
        let ns = labels(&[(DATAPLANE_MODE, "ambient")]);
        let p = plain("shop", json!({}));
        assert_eq!(verdict(&p, &ns, &scope()), Verdict::Ambient);
        assert!(!decided_without_namespace(&p));
        let none = plain("shop", json!({DATAPLANE_MODE: "none"}));
        assert!(matches!(verdict(&none, &ns, &scope()), Verdict::Not(_)));
        // Any other value of the pod's label defers to the namespace, as the chart's
        // `NotIn [none]` selector does.
        let other = plain("shop", json!({DATAPLANE_MODE: "sidecar"}));
        assert_eq!(verdict(&other, &ns, &scope()), Verdict::Ambient);
    }

    #[test]
    fn unlabelled_pods_in_unlabelled_namespaces_are_not() {
        let p = plain("shop", json!({}));
        assert!(matches!(
            verdict(&p, &labels(&[]), &scope()),
            Verdict::Not(_)
        ));
    }

    #[test]
    fn host_network_sidecar_ztunnel_and_excluded_pods_never_are() {
        let ns = labels(&[(DATAPLANE_MODE, "ambient")]);
        let host = pod(
            json!({"metadata": {"namespace": "shop", "labels": {DATAPLANE_MODE: "ambient"}},
            "spec": {"hostNetwork": true}}),
        );
        let sidecar = pod(
            json!({"metadata": {"namespace": "shop", "labels": {DATAPLANE_MODE: "ambient"},
            "annotations": {SIDECAR_STATUS: "{}"}}}),
        );
        let ztunnel = plain("istio-system", json!({"app": "ztunnel"}));
        let excluded = plain("kube-system", json!({DATAPLANE_MODE: "ambient"}));
        for p in [&host, &sidecar, &ztunnel, &excluded] {
            assert!(
                matches!(verdict(p, &ns, &scope()), Verdict::Not(_)),
                "{p:?}"
            );
        }
        // An app=ztunnel pod elsewhere is an ordinary pod.
        let lookalike = plain("shop", json!({"app": "ztunnel"}));
        assert_eq!(verdict(&lookalike, &ns, &scope()), Verdict::Ambient);
    }
}
