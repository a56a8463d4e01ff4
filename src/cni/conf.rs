//! The plugin's network configuration, the JSON on stdin: the CNI spec's well-known keys, the
//! interception settings under the long names of the CLI flags (`"istio-inbound-ports": "*"`,
//! `"native-nftables": true`), and an optional `kubernetes` section that turns on per-pod
//! settings from the API server.
//!
//! Unknown keys are refused (CNI error 2, naming the key), as the spec allows: a misspelt
//! flag fails the first ADD loudly instead of being ignored on every pod. Values are checked
//! later by the same validation as the CLI (`config::resolve`).

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::error::{CniError, code};
use super::result::CniResult;
pub use super::version::SUPPORTED_VERSIONS;
use super::version::{self, Version};
use crate::flags::{Cni, Flags, Spec};
use crate::profile::istio::flags;

/// Keys the CNI specification (1.1) and runtimes put into a plugin's configuration.
const WELL_KNOWN: &[&str] = &[
    "cniVersion",
    "cniVersions",
    "name",
    "type",
    "args",
    "ipMasq",
    "ipam",
    "dns",
    "runtimeConfig",
    "prevResult",
    "capabilities",
    "disableCheck",
    "disableGC",
    "networkScaling",
    "cni.dev/valid-attachments",
    "cni.dev/attachments",
];

/// Whether a key of a plugin's configuration is one the runtime or the installer sets (the CNI
/// spec's keys, and `kubernetes`), not an interception setting.
pub fn is_reserved(key: &str) -> bool {
    WELL_KNOWN.contains(&key) || key == "kubernetes"
}

/// The `kubernetes` section: where the API server is and which namespaces to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    pub kubeconfig: PathBuf,
    pub exclude_namespaces: Vec<String>,
    /// Ambient mode: the node agent's socket (`ambient-agent`); ambient pods are handed to it.
    pub ambient_agent: Option<PathBuf>,
    /// Istio's namespace (`system-namespace`, default istio-system): where ztunnel runs.
    pub system_namespace: String,
    /// Ambient mode: which pods are ambient (`enablement-selectors`, as the installer writes
    /// `AMBIENT_ENABLEMENT_SELECTOR`); absent: istio-cni's default selectors.
    pub enablement_selectors: crate::selector::EnablementSelectors,
}

/// Istio's namespace when the configuration names none.
pub const DEFAULT_SYSTEM_NAMESPACE: &str = "istio-system";

/// A parsed network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: Version,
    /// The primary plugin's result, read in the shape of its own version.
    pub prev_result: Option<CniResult>,
    /// Interception settings, exactly as if given on the command line.
    pub flags: Flags,
    pub kubernetes: Option<Kubernetes>,
}

/// The `cniVersion` of a configuration that may not parse fully, for error replies.
pub fn version_of(stdin: &[u8]) -> Option<Version> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    Version::supported(v.get("cniVersion")?.as_str()?)
}

/// The configuration as JSON: an object, or the spec's decoding error (code 6).
pub fn decode(stdin: &[u8]) -> Result<Value, CniError> {
    let decoding = |details: String| {
        CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            details,
        )
    };
    match serde_json::from_slice(stdin) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(decoding("stdin is not a JSON object".into())),
        Err(e) => Err(decoding(format!("stdin is not JSON: {e}"))),
    }
}

/// Parses the configuration for ADD (and everything that has no version rule of its own:
/// the installer checks its entry with it); errors carry the CNI code the spec assigns.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    parse_for("ADD", stdin)
}

/// Parses the configuration for `command`, whose version must allow it (`version::accept`).
pub fn parse_for(command: &str, stdin: &[u8]) -> Result<NetConf, CniError> {
    let value = decode(stdin)?;
    let cni_version = version::accept(command, &value)?;
    let Value::Object(obj) = value else {
        return Err(invalid("stdin", &value, "expected a JSON object"));
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(CniResult::read(v, cni_version)?),
        Some(other) => return Err(invalid("prevResult", other, "expected an object")),
    };
    let mut flags = Flags::default();
    let mut kubernetes = None;
    for (key, value) in &obj {
        if WELL_KNOWN.contains(&key.as_str()) {
            continue;
        }
        if key == "kubernetes" {
            kubernetes = Some(parse_kubernetes(value)?);
            continue;
        }
        let unsupported = |details: String| {
            CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field in the network configuration",
                details,
            )
        };
        let Some(spec) = flags::by_long(key) else {
            return Err(unsupported(format!(
                "unknown key {key:?} = {value} (interception settings use the long names of meshtables' flags, e.g. \"istio-inbound-ports\")"
            )));
        };
        if let Cni::NotHere(why) = spec.cni {
            return Err(unsupported(format!("{key:?} cannot be set here: {why}")));
        }
        flags.set(spec, flag_value(spec, value)?);
    }
    Ok(NetConf {
        cni_version,
        prev_result,
        flags,
        kubernetes,
    })
}

/// The settings that decide which objects in a namespace are ours, taken from a
/// configuration that may be invalid in every other respect (for DEL): the TPROXY mark and
/// route table, and the interfaces of `-c`/`-k` rules. Keys that are absent or not scalars
/// are left unset; nothing else is read.
pub fn ownership_settings(stdin: &[u8]) -> Flags {
    const KEYS: [&Spec; 4] = [
        &flags::TPROXY_MARK.spec,
        &flags::TPROXY_ROUTE_TABLE.spec,
        &flags::EXCLUDE_INTERFACES.spec,
        &flags::KUBE_VIRT_INTERFACES.spec,
    ];
    let mut flags = Flags::default();
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(stdin) {
        for spec in KEYS {
            if let Some(v) = obj.get(spec.long).and_then(|v| flag_value(spec, v).ok()) {
                flags.set(spec, v);
            }
        }
    }
    flags
}

/// The node agent's socket of a configuration that may not parse fully (DEL reads it
/// leniently: it must not fail on the configuration): `kubernetes.ambient-agent` when it is an
/// absolute path.
pub fn ambient_agent_of(stdin: &[u8]) -> Option<PathBuf> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    let p = v.get("kubernetes")?.get("ambient-agent")?.as_str()?;
    p.starts_with('/').then(|| PathBuf::from(p))
}

fn invalid(key: &str, value: &Value, expected: &str) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "invalid network configuration",
        format!("{key} = {value}: {expected}"),
    )
}

/// A flag's value as the CLI would have received it: strings as they are, booleans and
/// integers spelled out, lists joined with commas.
fn flag_value(spec: &Spec, value: &Value) -> Result<String, CniError> {
    let key = spec.long;
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() && !spec.boolean => Some(n.to_string()),
        Value::Bool(b) if spec.boolean => Some(b.to_string()),
        _ => None,
    };
    if let Value::Array(items) = value
        && !spec.boolean
    {
        let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
        return parts
            .map(|p| p.join(","))
            .ok_or_else(|| invalid(key, value, "expected a list of strings or numbers"));
    }
    scalar(value).ok_or_else(|| {
        let expected = if spec.boolean {
            "expected true or false"
        } else {
            "expected a string, a number or a list of them"
        };
        invalid(key, value, expected)
    })
}

fn parse_kubernetes(value: &Value) -> Result<Kubernetes, CniError> {
    let Value::Object(obj): &Value = value else {
        return Err(invalid("kubernetes", value, "expected an object"));
    };
    let obj: &Map<String, Value> = obj;
    let mut kubeconfig = None;
    let mut exclude_namespaces = Vec::new();
    let mut ambient_agent = None;
    let mut system_namespace = DEFAULT_SYSTEM_NAMESPACE.to_string();
    let mut enablement_selectors = crate::selector::EnablementSelectors::default();
    for (key, v) in obj {
        match (key.as_str(), v) {
            ("enablement-selectors", _) => {
                enablement_selectors = crate::selector::EnablementSelectors::from_json(v)
                    .map_err(|p| {
                        invalid(
                            "kubernetes.enablement-selectors",
                            v,
                            &format!(
                                "expected a list of {{podSelector, namespaceSelector}} label selectors: {p}"
                            ),
                        )
                    })?
            }
            ("ambient-agent", Value::String(p)) if p.starts_with('/') => {
                ambient_agent = Some(PathBuf::from(p))
            }
            ("ambient-agent", _) => {
                return Err(invalid(
                    "kubernetes.ambient-agent",
                    v,
                    "expected the node agent's socket, an absolute path",
                ));
            }
            ("system-namespace", Value::String(ns))
                if crate::values::NamespaceName::parse(ns).is_ok() =>
            {
                system_namespace = ns.clone()
            }
            ("system-namespace", _) => {
                return Err(invalid(
                    "kubernetes.system-namespace",
                    v,
                    "expected a namespace name (Istio's, where ztunnel runs)",
                ));
            }
            ("kubeconfig", Value::String(p)) if !p.is_empty() => {
                kubeconfig = Some(PathBuf::from(p))
            }
            ("kubeconfig", _) => {
                return Err(invalid("kubernetes.kubeconfig", v, "expected a file path"));
            }
            ("exclude-namespaces", Value::Array(items)) => {
                for i in items {
                    match i.as_str() {
                        Some(ns) => exclude_namespaces.push(ns.to_string()),
                        None => {
                            return Err(invalid(
                                "kubernetes.exclude-namespaces",
                                v,
                                "expected a list of namespace names",
                            ));
                        }
                    }
                }
            }
            ("exclude-namespaces", _) => {
                return Err(invalid(
                    "kubernetes.exclude-namespaces",
                    v,
                    "expected a list of namespace names",
                ));
            }
            _ => {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "unsupported field in the network configuration",
                    format!(
                        "unknown key \"kubernetes.{key}\" = {v} (known: kubeconfig, exclude-namespaces, ambient-agent, system-namespace, enablement-selectors)"
                    ),
                ));
            }
        }
    }
    let kubeconfig = kubeconfig.ok_or_else(|| {
        CniError::new(
            code::INVALID_CONFIG,
            "invalid network configuration",
            "kubernetes.kubeconfig is missing",
        )
    })?;
    Ok(Kubernetes {
        kubeconfig,
        exclude_namespaces,
        ambient_agent,
        system_namespace,
        enablement_selectors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(json: &str) -> Result<NetConf, (u32, String)> {
        parse(json.as_bytes()).map_err(|e| (e.code, e.details))
    }

    #[test]
    fn flags_by_long_name() {
        let c = codes(
            r#"{"cniVersion":"1.1.0","name":"k8s","type":"meshtables-cni",
                "istio-inbound-ports":"*","istio-local-exclude-ports":[15090,15021],
                "native-nftables":true,"proxy-uid":1337,
                "kubernetes":{"kubeconfig":"/etc/k","exclude-namespaces":["kube-system"]}}"#,
        )
        .unwrap();
        assert_eq!(c.flags.get(&flags::INBOUND_PORTS.spec), Some("*"));
        assert_eq!(
            c.flags.get(&flags::LOCAL_EXCLUDE_PORTS.spec),
            Some("15090,15021")
        );
        assert_eq!(c.flags.get(&flags::NATIVE_NFTABLES.spec), Some("true"));
        assert_eq!(c.flags.get(&flags::PROXY_UID.spec), Some("1337"));
        let k = c.kubernetes.unwrap();
        assert_eq!(k.exclude_namespaces, ["kube-system"]);
    }

    #[test]
    fn refusals_carry_the_spec_codes_and_name_the_key() {
        let cases: &[(&str, u32, &str)] = &[
            ("not json", code::DECODE, "not JSON"),
            ("[1]", code::DECODE, "object"),
            (
                r#"{"cniVersion":"0.2.0"}"#,
                code::INCOMPATIBLE_VERSION,
                "0.2.0",
            ),
            (
                r#"{"cniVersion":"2.0.0"}"#,
                code::INCOMPATIBLE_VERSION,
                "2.0.0",
            ),
            (
                r#"{"name":"x"}"#,
                code::INCOMPATIBLE_VERSION,
                "cniVersion missing",
            ),
            (
                r#"{"cniVersion":"1.1.0","prevResult":{"ips":[{"address":"10.0.0.5"}]}}"#,
                code::INVALID_CONFIG,
                "prevResult.ips[0].address",
            ),
            (
                r#"{"cniVersion":"1.0.0","istio-inbound-port":"80"}"#,
                code::UNSUPPORTED_FIELD,
                "istio-inbound-port",
            ),
            (
                r#"{"cniVersion":"1.0.0","dry-run":true}"#,
                code::UNSUPPORTED_FIELD,
                "dry-run",
            ),
            (
                r#"{"cniVersion":"1.0.0","native-nftables":"yes please"}"#,
                0,
                "",
            ),
            (
                r#"{"cniVersion":"1.0.0","istio-inbound-ports":{"a":1}}"#,
                code::INVALID_CONFIG,
                "istio-inbound-ports",
            ),
            (
                r#"{"cniVersion":"1.0.0","redirect-dns":1}"#,
                code::INVALID_CONFIG,
                "redirect-dns",
            ),
            (
                r#"{"cniVersion":"1.0.0","kubernetes":{"kubecfg":"/x"}}"#,
                code::UNSUPPORTED_FIELD,
                "kubernetes.kubecfg",
            ),
            (
                r#"{"cniVersion":"1.0.0","kubernetes":{}}"#,
                code::INVALID_CONFIG,
                "kubernetes.kubeconfig",
            ),
            (
                r#"{"cniVersion":"1.0.0","prevResult":[]}"#,
                code::INVALID_CONFIG,
                "prevResult",
            ),
        ];
        for (json, want, names) in cases {
            match codes(json) {
                // A string for a boolean is passed on; `config::resolve` judges it.
                Ok(_) if *want == 0 => {}
                Ok(_) => panic!("{json}: accepted"),
                Err((c, details)) => {
                    assert_eq!(c, *want, "{json}: {details}");
                    assert!(details.contains(names), "{json}: {details}");
                }
            }
        }
    }
}
