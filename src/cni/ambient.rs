//! Ambient pods in the plugin (with a `kubernetes.ambient-agent` socket): an ADD of a pod the
//! shared decision (`agent::eligible`) calls ambient is handed to the node agent, which
//! redirects it and gives it to ztunnel; the ADD fails unless the agent says done, so no
//! ambient pod starts unredirected (istio-cni's `PushCNIEvent`). A DEL tells the agent, and
//! never fails for it.

use std::path::Path;
use std::time::Duration;

use super::conf::Kubernetes;
use super::error::{CniError, code};
use super::kube;
use super::pod::Pod;
use crate::agent::eligible::{self, Scope, Verdict};
use crate::agent::events::{self, CallError, PodEvent, Request};
use crate::values::NamespaceName;

/// How long an ADD waits for the agent: longer than the agent's wait for ztunnel's ack
/// (5 s) plus the API calls around it, so the agent's own error arrives rather than ours.
pub const ADD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a DEL waits; a DEL never fails for the agent, so it waits less.
pub const DEL_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether `pod` is ambient, reading its namespace's labels only when the pod's do not decide.
pub fn verdict(k: &Kubernetes, pod: &Pod) -> Result<Verdict, CniError> {
    let scope = Scope {
        system_namespace: k.system_namespace.clone(),
        exclude_namespaces: k.exclude_namespaces.clone(),
        selectors: k.enablement_selectors.clone(),
    };
    if eligible::decided_without_namespace(pod, &scope) {
        return Ok(eligible::verdict(pod, &Default::default(), &scope));
    }
    let ns = NamespaceName::parse(&pod.metadata.namespace).map_err(|p| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            "the API server's pod has no usable namespace",
            format!("{:?} {p}", pod.metadata.namespace),
        )
    })?;
    let client = kube::Client::from_kubeconfig(&k.kubeconfig)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, "invalid kubeconfig", e.to_string()))?;
    let namespace = client.namespace(&ns).map_err(|e| {
        CniError::new(
            code::TRY_AGAIN_LATER,
            "cannot read the pod's namespace",
            e.to_string(),
        )
    })?;
    Ok(eligible::verdict(pod, &namespace.metadata.labels, &scope))
}

/// Hands the pod to the agent and waits for it to say done.
pub fn add(socket: &Path, ev: PodEvent) -> Result<(), CniError> {
    let id = format!("{}/{}", ev.namespace, ev.name);
    events::call(socket, &Request::Add(ev), ADD_TIMEOUT).map_err(|e| match e {
        CallError::Refused(why) => CniError::new(
            code::RULES_FAILED,
            "the node agent could not enrol the ambient pod",
            why,
        ),
        e => CniError::new(
            code::TRY_AGAIN_LATER,
            "the node agent is not available; the ambient pod waits for it",
            format!("pod {id}: {e}"),
        ),
    })
}

/// Tells the agent the pod is going; a failure is logged, not returned.
pub fn del(socket: &Path, ev: PodEvent) {
    let id = format!("{}/{}", ev.namespace, ev.name);
    match events::call(socket, &Request::Del(ev), DEL_TIMEOUT) {
        Ok(()) => crate::logging::debug(&format!("DEL: the node agent let pod {id} go")),
        Err(e) => crate::logging::warn(&format!("DEL of pod {id}: {e}")),
    }
}
