//! Istio's sidecar semantics for a pod read from the API server (istio-cni's `doAddRun` and
//! `NewRedirect`; docs/upstream.md, "CNI"): which pods are left alone, and how annotations,
//! the proxy container's securityContext and its environment become interception settings.
//!
//! Precedence, per setting: the pod's annotation (or proxy env / securityContext) > the
//! plugin configuration > istio-cni's default. Pure: a typed `Pod` and flags in, a verdict out.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::flags::{Flags, PodField, Spec};
use crate::profile::istio::flags;
use crate::values::parse_bool;

/// The parts of a Pod object (API `v1`) Istio's semantics read. Unknown fields are ignored;
/// a field of the wrong JSON type makes the whole answer "not a pod".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pod {
    pub metadata: Metadata,
    pub spec: PodSpec,
    pub status: PodStatus,
}

/// An object's metadata: what the sidecar semantics read (labels, annotations) and what the
/// node agent needs to name a pod and tell one incarnation from the next (name, namespace,
/// uid, deletion).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metadata {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub namespace: String,
    #[serde(deserialize_with = "null_default")]
    pub uid: String,
    #[serde(deserialize_with = "null_default")]
    pub resource_version: String,
    pub deletion_timestamp: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_default")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(deserialize_with = "null_default")]
    pub containers: Vec<Container>,
    #[serde(deserialize_with = "null_default")]
    pub init_containers: Vec<Container>,
    #[serde(deserialize_with = "null_default")]
    pub node_name: String,
    #[serde(deserialize_with = "null_default")]
    pub service_account_name: String,
    #[serde(deserialize_with = "null_default")]
    pub host_network: bool,
}

/// The status the node agent reads: the pod's addresses and phase, and its init containers'
/// states (how istio-cni's repair controller tells a broken sidecar pod).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(deserialize_with = "null_default")]
    pub phase: String,
    /// `podIPs` (serde's camelCase would say `podIps`).
    #[serde(rename = "podIPs", deserialize_with = "null_default")]
    pub pod_ips: Vec<PodIp>,
    #[serde(deserialize_with = "null_default")]
    pub init_container_statuses: Vec<ContainerStatus>,
}

/// One of `status.initContainerStatuses`: the container's current state and the one before
/// (`lastState`, where a container that keeps failing shows how its last run ended).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerStatus {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub state: ContainerState,
    #[serde(deserialize_with = "null_default")]
    pub last_state: ContainerState,
}

/// A container's state; of its three members only `terminated` is read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ContainerState {
    pub terminated: Option<Terminated>,
}

/// How a container's run ended.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Terminated {
    pub exit_code: i32,
    #[serde(deserialize_with = "null_default")]
    pub reason: String,
    #[serde(deserialize_with = "null_default")]
    pub message: String,
}

/// A Namespace object (API `v1`): its labels say whether its pods are ambient.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Namespace {
    pub metadata: Metadata,
}

/// One of `status.podIPs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub args: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub env: Vec<EnvVar>,
    pub security_context: Option<SecurityContext>,
}

/// An env entry; `valueFrom` entries have no value here (istio-cni reads `value` only).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct EnvVar {
    pub name: String,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
}

/// `null` where a list or map is expected means empty, as the API server may write it.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Leave the pod alone, for this reason.
    Skip(String),
    /// Program it; the flags were updated, and `from_pod` says which flag took which pod
    /// field (so a bad value can be reported by the annotation that carried it).
    Intercept {
        from_pod: Vec<(&'static str, String)>,
    },
}

const PROXY: &str = "istio-proxy";
const INIT: &str = "istio-init";
const STATUS: &str = "sidecar.istio.io/status";
const INJECT: &str = "sidecar.istio.io/inject";

/// Ports istio-cni always excludes from inbound capture (the agent's status, health and
/// metrics ports), appended to whatever the pod or the plugin says.
const ALWAYS_EXCLUDED_INBOUND: &[&str] = &["15020", "15021", "15090"];

/// Why istio-cni leaves `pod` alone, if it does.
fn skip_reason(pod: &Pod) -> Option<String> {
    let spec = &pod.spec;
    if spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .any(|c| c.name == INIT)
    {
        return Some(format!(
            "it has an {INIT} container, which programs the rules itself"
        ));
    }
    let Some(proxy) = spec.containers.iter().find(|c| c.name == PROXY) else {
        return Some(format!("it has no {PROXY} container"));
    };
    if proxy_env_bool(proxy, "DISABLE_ENVOY") == Some(true) {
        return Some(format!("DISABLE_ENVOY is set on {PROXY}"));
    }
    if let [first, kind, ..] = proxy.args.as_slice()
        && first == "proxy"
        && kind != "sidecar"
    {
        return Some(format!("its proxy type is {kind}, not sidecar"));
    }
    let meta = &pod.metadata;
    // The label is the newer API; it wins over the annotation.
    let inject = meta
        .labels
        .get(INJECT)
        .or_else(|| meta.annotations.get(INJECT));
    if inject.and_then(|v| parse_bool(v)) == Some(false) {
        return Some(format!("{INJECT} is false"));
    }
    if !meta.annotations.contains_key(STATUS) {
        return Some(format!("it has no {STATUS} annotation (not injected)"));
    }
    None
}

/// A boolean in the proxy container's environment.
fn proxy_env_bool(proxy: &Container, name: &str) -> Option<bool> {
    proxy
        .env
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| parse_bool(e.value.as_deref().unwrap_or("")))
}

/// Decides for `pod` and, when it is to be intercepted, layers its settings over `flags`.
pub fn evaluate(pod: &Pod, flags: &mut Flags) -> Verdict {
    if let Some(why) = skip_reason(pod) {
        return Verdict::Skip(why);
    }
    let Some(proxy) = pod.spec.containers.iter().find(|c| c.name == PROXY) else {
        return Verdict::Skip(format!("it has no {PROXY} container"));
    };
    let meta = &pod.metadata;
    let env_bool = |name: &str| proxy_env_bool(proxy, name);
    let mut from_pod = Vec::new();
    for spec in flags::ALL {
        let Some(p) = &spec.pod else { continue };
        let found = match p.field {
            PodField::Annotation(keys) => keys.iter().find_map(|k| {
                let v = meta.annotations.get(*k)?;
                Some((v.clone(), format!("pod annotation {k}")))
            }),
            PodField::SecurityContext(field) => {
                let sc = proxy.security_context.as_ref();
                let id = match field {
                    "runAsUser" => sc.and_then(|s| s.run_as_user),
                    _ => sc.and_then(|s| s.run_as_group),
                };
                id.filter(|id| *id != 0)
                    .map(|id| (id.to_string(), format!("{PROXY} securityContext.{field}")))
            }
            PodField::ProxyEnv(name) => {
                env_bool(name).map(|on| (on.to_string(), format!("{PROXY} env {name}")))
            }
        };
        match found {
            Some((value, source)) => {
                flags.set(spec, value);
                from_pod.push((spec.long, source));
            }
            None => default_unless_set(flags, spec, p.istio_cni_default),
        }
    }
    // istio-cni appends the agent's ports to every inbound exclusion list.
    let mut exclude: Vec<String> = Vec::new();
    let excluded = &flags::LOCAL_EXCLUDE_PORTS.spec;
    let current = flags.get(excluded).unwrap_or_default().to_string();
    for p in current
        .split(',')
        .map(str::trim)
        .chain(ALWAYS_EXCLUDED_INBOUND.iter().copied())
    {
        if !p.is_empty() && !exclude.iter().any(|e| e == p) {
            exclude.push(p.to_string());
        }
    }
    flags.set(excluded, exclude.join(","));

    Verdict::Intercept { from_pod }
}

/// istio-cni's default, where neither the pod nor the plugin configuration says.
fn default_unless_set(flags: &mut Flags, spec: &'static Spec, default: Option<&str>) {
    if let Some(d) = default
        && !flags.is_set(spec)
    {
        flags.set(spec, d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn typed(v: Value) -> Pod {
        serde_json::from_value(v).expect("a pod")
    }

    fn injected() -> Value {
        json!({
            "metadata": {"name": "app", "namespace": "shop",
                "annotations": {STATUS: "{}"}, "labels": {}},
            "spec": {
                "initContainers": [{"name": "istio-validation"}],
                "containers": [
                    {"name": "app"},
                    {"name": PROXY, "args": ["proxy", "sidecar"],
                     "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}
                ]
            }
        })
    }

    #[test]
    fn skips_what_istio_cni_skips() {
        let mut with_init = injected();
        with_init["spec"]["initContainers"] = json!([{"name": INIT}]);
        let mut no_proxy = injected();
        no_proxy["spec"]["containers"] = json!([{"name": "app"}]);
        let mut disabled = injected();
        disabled["spec"]["containers"][1]["env"] =
            json!([{"name": "DISABLE_ENVOY", "value": "true"}]);
        let mut gateway = injected();
        gateway["spec"]["containers"][1]["args"] = json!(["proxy", "router"]);
        let mut opted_out = injected();
        opted_out["metadata"]["labels"][INJECT] = json!("false");
        let mut not_injected = injected();
        not_injected["metadata"]["annotations"] = json!({});
        for (pod, why) in [
            (with_init, INIT),
            (no_proxy, "no istio-proxy"),
            (disabled, "DISABLE_ENVOY"),
            (gateway, "router"),
            (opted_out, INJECT),
            (not_injected, STATUS),
        ] {
            match evaluate(&typed(pod), &mut Flags::default()) {
                Verdict::Skip(reason) => assert!(reason.contains(why), "{reason}"),
                v => panic!("expected a skip for {why}, got {v:?}"),
            }
        }
    }

    #[test]
    fn defaults_annotations_and_plugin_config() {
        let mut f = Flags::default();
        assert!(matches!(
            evaluate(&typed(injected()), &mut f),
            Verdict::Intercept { .. }
        ));
        assert_eq!(f.get(&flags::INBOUND_PORTS.spec), Some("*"));
        assert_eq!(f.get(&flags::SERVICE_CIDR.spec), Some("*"));
        assert_eq!(
            f.get(&flags::LOCAL_EXCLUDE_PORTS.spec),
            Some("15020,15021,15090")
        );
        assert_eq!(f.get(&flags::OUTBOUND_PORTS_EXCLUDE.spec), Some("15020"));
        assert_eq!(f.get(&flags::PROXY_UID.spec), Some("1337"));

        let mut pod = injected();
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/includeInboundPorts"] =
            json!("8080");
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"] =
            json!("9090,15021");
        pod["metadata"]["annotations"]["sidecar.istio.io/interceptionMode"] = json!("TPROXY");
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/kubevirtInterfaces"] =
            json!("old0");
        pod["metadata"]["annotations"]["istio.io/reroute-virtual-interfaces"] = json!("new0");
        pod["spec"]["containers"][1]["securityContext"] = json!({"runAsUser": 2000});
        pod["spec"]["containers"][1]["env"] =
            json!([{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}]);
        // The plugin's setting is used where the pod says nothing.
        let mut f = Flags::default();
        f.set(&flags::SERVICE_EXCLUDE_CIDR.spec, "10.0.0.0/8");
        f.set(&flags::PROXY_GID.spec, "3000");
        let Verdict::Intercept { from_pod } = evaluate(&typed(pod), &mut f) else {
            panic!("skipped")
        };
        assert_eq!(f.get(&flags::INBOUND_PORTS.spec), Some("8080"));
        assert_eq!(
            f.get(&flags::LOCAL_EXCLUDE_PORTS.spec),
            Some("9090,15021,15020,15090")
        );
        assert_eq!(f.get(&flags::INTERCEPTION_MODE.spec), Some("TPROXY"));
        assert_eq!(f.get(&flags::KUBE_VIRT_INTERFACES.spec), Some("new0"));
        assert_eq!(f.get(&flags::PROXY_UID.spec), Some("2000"));
        assert_eq!(f.get(&flags::PROXY_GID.spec), Some("3000"));
        assert_eq!(f.get(&flags::SERVICE_EXCLUDE_CIDR.spec), Some("10.0.0.0/8"));
        assert_eq!(f.get(&flags::REDIRECT_DNS.spec), Some("true"));
        assert_eq!(f.get(&flags::CAPTURE_ALL_DNS.spec), Some("true"));
        assert!(from_pod.contains(&(
            "istio-inbound-ports",
            "pod annotation traffic.sidecar.istio.io/includeInboundPorts".into()
        )));
    }
}

#[cfg(test)]
mod decoding {
    use super::*;

    #[test]
    fn nulls_are_empty_and_wrong_types_are_errors() {
        let p: Pod = serde_json::from_str(
            r#"{"metadata": {"labels": null, "annotations": {"a": "b"}, "generation": 5},
                "spec": {"containers": [{"name": "istio-proxy", "env": null,
                         "securityContext": {"runAsUser": 1337}}]}}"#,
        )
        .unwrap();
        assert!(p.metadata.labels.is_empty());
        let ips: Pod =
            serde_json::from_str(r#"{"status": {"podIPs": [{"ip": "10.0.0.5"}]}}"#).unwrap();
        assert_eq!(
            ips.status.pod_ips[0].ip, "10.0.0.5",
            "status.podIPs, as the API spells it"
        );
        assert_eq!(
            p.spec.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .run_as_user,
            Some(1337)
        );
        for bad in [
            r#"{"metadata": {"annotations": {"a": 1}}}"#,
            r#"{"metadata": {"uid": 5}}"#,
            r#"{"status": {"podIPs": [{"ip": 5}]}}"#,
            r#"{"spec": {"containers": {"name": "x"}}}"#,
            r#"{"spec": {"containers": [{"securityContext": {"runAsUser": "root"}}]}}"#,
            r#""a pod""#,
        ] {
            assert!(serde_json::from_str::<Pod>(bad).is_err(), "{bad}");
        }
    }
}
