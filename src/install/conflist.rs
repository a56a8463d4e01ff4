//! The primary network's configuration, and our entry in it. Pure: bytes in, bytes out.
//!
//! The runtime uses the lexically first valid `.conflist`, `.conf` or `.json` file of its
//! configuration directory; so do we. Our entry (`"type": "meshtables-cni"`) goes last in the
//! plugin chain: the primary plugin has made the interface and addresses by then. A `.conf`
//! (one plugin) becomes a `.conflist` holding it and us, as Istio's installer does, except
//! that its `name` and `cniVersion` are kept (Istio renames the network `k8s-pod-network` and
//! sets version 0.3.1; a new network name makes the runtime treat existing pods' leases as
//! another network's). An entry of ours already there is replaced, so a rerun converges.
//! Keys are written sorted with two-space indentation, as Istio writes them.

use serde_json::{Map, Value};

/// Our plugin's `type`.
pub const TYPE: &str = "meshtables-cni";

/// Why a file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("not a network configuration (expected an object with \"type\", or with \"plugins\")")]
    NotANetwork,
    #[error("\"plugins\" is not a list of objects")]
    BadPlugins,
    #[error("the chain has no plugin")]
    Empty,
    #[error("the chain holds no plugin but meshtables-cni (no primary plugin)")]
    OnlyUs,
    #[error("it nests {0} levels deep; the installer rewrites files up to {REWRITE_DEPTH} levels")]
    TooDeep(usize),
}

/// Whether a file name is one the runtime reads as a network configuration: libcni's rule,
/// the extension alone. A dot file is read too (podman and containerd load
/// `.x.conflist`), so nothing of ours beside the configuration may carry these extensions.
pub fn is_config_name(name: &str) -> bool {
    crate::values::CNI_CONF_EXTENSIONS
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// The deepest configuration the installer rewrites. The runtime loads files nested up to
/// Go's limit (10000), but a value that deep takes megabytes of stack to serialize: such a
/// file is left alone, and the installer says why.
pub const REWRITE_DEPTH: usize = 64;

/// A parsed configuration: a list (with `plugins`) or a single plugin (`.conf`), decoded as
/// the runtime's Go decoder decodes it (an invalid UTF-8 byte is U+FFFD, as the runtime passes
/// it to the plugins; `gojson`).
fn parse(bytes: &[u8]) -> Result<Map<String, Value>, ConfError> {
    let node = super::gojson::parse(bytes).map_err(|e| ConfError::NotJson(e.to_string()))?;
    let depth = node.depth();
    if depth > REWRITE_DEPTH {
        return Err(ConfError::TooDeep(depth));
    }
    match node.to_value() {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ConfError::NotANetwork),
        Err(e) => Err(ConfError::NotJson(e.to_string())),
    }
}

/// The plugin list of a configuration (a single plugin is a list of one).
fn plugins(m: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, ConfError> {
    match (m.get("plugins"), m.get("type")) {
        (Some(Value::Array(list)), _) => list
            .iter()
            .map(|p| match p {
                Value::Object(o) => Ok(o.clone()),
                _ => Err(ConfError::BadPlugins),
            })
            .collect(),
        (Some(_), _) => Err(ConfError::BadPlugins),
        (None, Some(Value::String(_))) => Ok(vec![m.clone()]),
        _ => Err(ConfError::NotANetwork),
    }
}

fn is_ours(p: &Map<String, Value>) -> bool {
    p.get("type").and_then(Value::as_str) == Some(TYPE)
}

/// Whether the chain holds our entry, exactly `entry` when given.
pub fn holds(bytes: &[u8], entry: Option<&Map<String, Value>>) -> bool {
    let Ok(list) = parse(bytes).and_then(|m| plugins(&m)) else {
        return false;
    };
    list.iter()
        .any(|p| is_ours(p) && entry.is_none_or(|e| p == e))
}

/// The configuration with `entry` last in its chain (replacing an entry of ours), as a
/// `.conflist`. `None` when it already ends with exactly `entry`.
pub fn insert(bytes: &[u8], entry: &Map<String, Value>) -> Result<Option<Vec<u8>>, ConfError> {
    let m = parse(bytes)?;
    let mut list = plugins(&m)?;
    if list.is_empty() {
        return Err(ConfError::Empty);
    }
    let is_list = m.contains_key("plugins");
    if is_list && list.last() == Some(entry) && list.iter().filter(|p| is_ours(p)).count() == 1 {
        return Ok(None);
    }
    list.retain(|p| !is_ours(p));
    if list.is_empty() {
        return Err(ConfError::OnlyUs);
    }
    list.push(entry.clone());
    let out = if is_list {
        let mut out = m.clone();
        out.insert(
            "plugins".into(),
            list.into_iter().map(Value::Object).collect(),
        );
        out
    } else {
        // A single plugin: it and we become a list; its name and version move up.
        let mut first = list.remove(0);
        let mut out = Map::new();
        for key in ["cniVersion", "name"] {
            if let Some(v) = first.remove(key) {
                out.insert(key.into(), v);
            }
        }
        let mut chain = vec![Value::Object(first)];
        chain.extend(list.into_iter().map(Value::Object));
        out.insert("plugins".into(), Value::Array(chain));
        out
    };
    Ok(Some(write(&out)))
}

/// Our entry in a chain (the last one, if there are several).
pub fn entry_of(bytes: &[u8]) -> Option<Map<String, Value>> {
    let list = parse(bytes).and_then(|m| plugins(&m)).ok()?;
    list.into_iter().rev().find(is_ours)
}

/// Whether a configuration is a list (`plugins`), not a single plugin.
pub fn is_list(bytes: &[u8]) -> bool {
    parse(bytes).is_ok_and(|m| m.contains_key("plugins"))
}

/// Whether the chain also holds Istio's own CNI plugin (`istio-cni`): both would program
/// every pod.
pub fn holds_istio_cni(bytes: &[u8]) -> bool {
    parse(bytes).and_then(|m| plugins(&m)).is_ok_and(|l| {
        l.iter()
            .any(|p| p.get("type").and_then(Value::as_str) == Some("istio-cni"))
    })
}

/// The configuration without our entry; `None` when it holds none.
pub fn remove(bytes: &[u8]) -> Result<Option<Vec<u8>>, ConfError> {
    let mut m = parse(bytes)?;
    let list = plugins(&m)?;
    if !list.iter().any(is_ours) {
        return Ok(None);
    }
    let kept: Vec<Value> = list
        .into_iter()
        .filter(|p| !is_ours(p))
        .map(Value::Object)
        .collect();
    m.insert("plugins".into(), Value::Array(kept));
    Ok(Some(write(&m)))
}

fn write(m: &Map<String, Value>) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(m).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry() -> Map<String, Value> {
        json!({"type": "meshtables-cni", "name": "meshtables-cni"})
            .as_object()
            .cloned()
            .unwrap_or_default()
    }

    #[test]
    fn a_list_gets_us_last_and_a_rerun_changes_nothing() {
        let list = br#"{"cniVersion": "0.4.0", "name": "dbnet", "plugins": [{"type": "bridge"}, {"type": "tuning"}]}"#;
        let once = insert(list, &entry()).unwrap().unwrap();
        let v: Value = serde_json::from_slice(&once).unwrap();
        assert_eq!(v["plugins"][2]["type"], "meshtables-cni");
        assert_eq!(v["name"], "dbnet");
        assert_eq!(insert(&once, &entry()).unwrap(), None);
        assert!(holds(&once, Some(&entry())));
        let back: Value = serde_json::from_slice(&remove(&once).unwrap().unwrap()).unwrap();
        let orig: Value = serde_json::from_slice(list).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn a_conf_becomes_a_list_keeping_its_name_and_version() {
        let conf =
            br#"{"cniVersion": "0.4.0", "name": "dbnet", "type": "bridge", "bridge": "cni0"}"#;
        let v: Value = serde_json::from_slice(&insert(conf, &entry()).unwrap().unwrap()).unwrap();
        assert_eq!(v["name"], "dbnet");
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(v["plugins"][0], json!({"type": "bridge", "bridge": "cni0"}));
        assert_eq!(v["plugins"][1]["type"], "meshtables-cni");
    }

    #[test]
    fn an_old_entry_of_ours_is_replaced_not_duplicated() {
        let list = br#"{"name": "n", "plugins": [{"type": "meshtables-cni", "compact": true}, {"type": "bridge"}]}"#;
        let v: Value = serde_json::from_slice(&insert(list, &entry()).unwrap().unwrap()).unwrap();
        assert_eq!(v["plugins"].as_array().unwrap().len(), 2);
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][1], Value::Object(entry()));
    }

    #[test]
    fn chains_without_a_primary_or_too_deep_are_not_rewritten() {
        assert_eq!(insert(b"[]", &entry()), Err(ConfError::NotANetwork));
        assert!(matches!(
            insert(b"{nope", &entry()),
            Err(ConfError::NotJson(_))
        ));
        assert_eq!(
            insert(br#"{"plugins": []}"#, &entry()),
            Err(ConfError::Empty)
        );
        let only_us = br#"{"name": "n", "plugins": [{"type": "meshtables-cni"}]}"#;
        assert_eq!(insert(only_us, &entry()), Err(ConfError::OnlyUs));
        let deep = format!(
            r#"{{"name": "n", "plugins": [{{"type": "bridge", "x": {}{}}}]}}"#,
            "[".repeat(REWRITE_DEPTH),
            "]".repeat(REWRITE_DEPTH)
        );
        assert!(matches!(
            insert(deep.as_bytes(), &entry()),
            Err(ConfError::TooDeep(_))
        ));
    }

    /// The runtime's Go decoder takes an invalid UTF-8 byte as U+FFFD: so does the chain.
    #[test]
    fn an_invalid_utf8_byte_is_what_go_makes_of_it() {
        let list = b"{\"name\": \"n\xff\", \"plugins\": [{\"type\": \"bridge\"}]}";
        let v: Value = serde_json::from_slice(&insert(list, &entry()).unwrap().unwrap()).unwrap();
        assert_eq!(v["name"], "n\u{fffd}");
    }
}
