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

use super::{CniError, code};
use crate::cli::Flags;

/// The CNI versions this plugin speaks; the last one is what VERSION reports first.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.4.0", "1.0.0", "1.1.0"];

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

/// Flags that have no place in a plugin configuration, and why.
const NOT_IN_CONFIG: &[(&str, &str)] = &[
    (
        "network-namespace",
        "the plugin programs the namespace in CNI_NETNS",
    ),
    ("cni-mode", "it is always on in the plugin"),
    ("cleanup-only", "DEL cleans"),
    ("dry-run", "the plugin is invoked to change the pod"),
    ("skip-rule-apply", "the plugin is invoked to change the pod"),
    ("output", "the plugin prints CNI results"),
    (
        "run-validation",
        "validation runs inside the pod (Istio's istio-validation init container)",
    ),
    (
        "resolv-conf",
        "the host's files are not the pod's; give dns-servers or capture-all-dns",
    ),
];

/// The `kubernetes` section: where the API server is and which namespaces to leave alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kubernetes {
    pub kubeconfig: PathBuf,
    pub exclude_namespaces: Vec<String>,
}

/// A parsed network configuration.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub prev_result: Option<Value>,
    /// Interception settings, exactly as if given on the command line.
    pub flags: Flags,
    pub kubernetes: Option<Kubernetes>,
}

/// The `cniVersion` of a configuration that may not parse fully, for error replies.
pub fn version_of(stdin: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    let s = v.get("cniVersion")?.as_str()?;
    SUPPORTED_VERSIONS.contains(&s).then(|| s.to_string())
}

/// Parses the configuration; errors carry the CNI code the spec assigns.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            format!("stdin is not JSON: {e}"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            "stdin is not a JSON object",
        ));
    };
    let cni_version = match obj.get("cniVersion") {
        Some(Value::String(v)) if SUPPORTED_VERSIONS.contains(&v.as_str()) => v.clone(),
        Some(Value::String(v)) => {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI version",
                format!(
                    "cniVersion {v:?} is not supported (supported: {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            ));
        }
        Some(other) => return Err(invalid("cniVersion", other, "expected a version string")),
        None => {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "invalid network configuration",
                "cniVersion is missing",
            ));
        }
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
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
        if let Some((_, why)) = NOT_IN_CONFIG.iter().find(|(k, _)| k == key) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field in the network configuration",
                format!("{key:?} cannot be set here: {why}"),
            ));
        }
        if !Flags::LONG_NAMES.contains(&key.as_str()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "unsupported field in the network configuration",
                format!(
                    "unknown key {key:?} = {value} (interception settings use the long names of meshtables' flags, e.g. \"istio-inbound-ports\")"
                ),
            ));
        }
        flags.set(key, flag_value(key, value)?);
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
    const KEYS: [&str; 4] = [
        "istio-inbound-tproxy-mark",
        "istio-inbound-tproxy-route-table",
        "istio-exclude-interfaces",
        "kube-virt-interfaces",
    ];
    let mut flags = Flags::default();
    if let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(stdin) {
        for key in KEYS {
            if let Some(v) = obj.get(key).and_then(|v| flag_value(key, v).ok()) {
                flags.set(key, v);
            }
        }
    }
    flags
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
fn flag_value(key: &str, value: &Value) -> Result<String, CniError> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_u64() && !Flags::is_bool(key) => Some(n.to_string()),
        Value::Bool(b) if Flags::is_bool(key) => Some(b.to_string()),
        _ => None,
    };
    if let Value::Array(items) = value
        && !Flags::is_bool(key)
    {
        let parts: Option<Vec<String>> = items.iter().map(scalar).collect();
        return parts
            .map(|p| p.join(","))
            .ok_or_else(|| invalid(key, value, "expected a list of strings or numbers"));
    }
    scalar(value).ok_or_else(|| {
        let expected = if Flags::is_bool(key) {
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
    for (key, v) in obj {
        match (key.as_str(), v) {
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
                        "unknown key \"kubernetes.{key}\" = {v} (known: kubeconfig, exclude-namespaces)"
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
        assert_eq!(c.flags.istio_inbound_ports.as_deref(), Some("*"));
        assert_eq!(
            c.flags.istio_local_exclude_ports.as_deref(),
            Some("15090,15021")
        );
        assert_eq!(c.flags.native_nftables.as_deref(), Some("true"));
        assert_eq!(c.flags.proxy_uid.as_deref(), Some("1337"));
        let k = c.kubernetes.unwrap();
        assert_eq!(k.exclude_namespaces, ["kube-system"]);
    }

    #[test]
    fn refusals_carry_the_spec_codes_and_name_the_key() {
        let cases: &[(&str, u32, &str)] = &[
            ("not json", code::DECODE, "not JSON"),
            ("[1]", code::DECODE, "object"),
            (
                r#"{"cniVersion":"0.3.1"}"#,
                code::INCOMPATIBLE_VERSION,
                "0.3.1",
            ),
            (r#"{"name":"x"}"#, code::INVALID_CONFIG, "cniVersion"),
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
