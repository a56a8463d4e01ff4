//! The plugin's kubeconfig, made from the installer's own service account: the API server
//! from `KUBERNETES_SERVICE_HOST`/`PORT` (what the kubelet gives every pod), the cluster's CA
//! and the projected token embedded. Written as JSON (a kubeconfig may be YAML or JSON). The
//! token is embedded rather than referenced because the file the runtime reads lives on the
//! host, where the pod's projected volume is not; it is rewritten when the token rotates.

use std::path::Path;

use base64::Engine;
use serde_json::json;

use crate::profile::istio::config::EnvSource;

/// Why a kubeconfig cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{0} is not set: the installer must run in a pod (the kubelet sets it)")]
    NoEnv(&'static str),
    #[error("{var}: {value:?} is not a port")]
    BadPort { var: &'static str, value: String },
    #[error("KUBERNETES_SERVICE_HOST: {0:?} is not an IP address or a DNS name")]
    BadHost(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The API server's URL, from what the kubelet gives every pod: `KUBERNETES_SERVICE_HOST`
/// (an IP address or a DNS name) and `KUBERNETES_SERVICE_PORT` (default 443).
pub fn server(env: &dyn EnvSource) -> Result<String, KubeconfigError> {
    let host = env
        .var("KUBERNETES_SERVICE_HOST")
        .filter(|h| !h.is_empty())
        .ok_or(KubeconfigError::NoEnv("KUBERNETES_SERVICE_HOST"))?;
    let port = env
        .var("KUBERNETES_SERVICE_PORT")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "443".into());
    let port: u16 = port
        .trim()
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| KubeconfigError::BadPort {
            var: "KUBERNETES_SERVICE_PORT",
            value: port.clone(),
        })?;
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(a)) => format!("[{a}]"),
        Ok(std::net::IpAddr::V4(a)) => a.to_string(),
        Err(_) if is_dns_name(&host) => host,
        Err(_) => return Err(KubeconfigError::BadHost(host)),
    };
    Ok(format!("https://{host}:{port}"))
}

/// A DNS name (RFC 1123 host name): dot-separated labels of letters, digits and `-`, none
/// empty, longer than 63 or starting or ending with `-`; at most 253 characters; one
/// trailing dot allowed.
fn is_dns_name(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Whether `bytes` is a kubeconfig this installer wrote (whatever its token or server): the
/// user and context are named after the plugin. Another program's file of the same name
/// (istio-cni's) is not ours to overwrite or remove.
pub fn is_ours(bytes: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return false;
    };
    v["current-context"] == "meshtables-cni"
        && v["users"]
            .as_array()
            .is_some_and(|u| u.iter().any(|u| u["name"] == "meshtables-cni"))
}

/// The kubeconfig's bytes for the service account in `sa_dir`.
pub fn make(sa_dir: &Path, env: &dyn EnvSource) -> Result<Vec<u8>, KubeconfigError> {
    let server = server(env)?;
    let read = |name: &str| {
        let path = sa_dir.join(name);
        super::files::read(&path).map_err(|source| KubeconfigError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let token = String::from_utf8_lossy(&read("token")?).trim().to_string();
    let ca = base64::engine::general_purpose::STANDARD.encode(read("ca.crt")?);
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": server,
            "certificate-authority-data": ca,
        }}],
        "users": [{"name": "meshtables-cni", "user": {"token": token}}],
        "contexts": [{"name": "meshtables-cni", "context": {"cluster": "local", "user": "meshtables-cni"}}],
        "current-context": "meshtables-cni",
    });
    let mut out = serde_json::to_vec_pretty(&config).unwrap_or_default();
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn server_of(host: &str, port: Option<&str>) -> Result<String, KubeconfigError> {
        let mut env = HashMap::new();
        env.insert("KUBERNETES_SERVICE_HOST".to_string(), host.to_string());
        if let Some(p) = port {
            env.insert("KUBERNETES_SERVICE_PORT".to_string(), p.to_string());
        }
        server(&env)
    }

    #[test]
    fn the_server_is_an_address_or_a_dns_name() {
        assert_eq!(
            server_of("10.96.0.1", None).unwrap(),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            server_of("fd00::1", Some("6443")).unwrap(),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            server_of("kubernetes.default.svc", Some("443")).unwrap(),
            "https://kubernetes.default.svc:443"
        );
        for bad in [
            "10.96.0.1/evil",
            "a b",
            "x@y",
            "-a.b",
            "[fd00::1]",
            "a..b",
            "h:1",
        ] {
            assert!(
                matches!(server_of(bad, None), Err(KubeconfigError::BadHost(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            server_of("10.0.0.1", Some("0")),
            Err(KubeconfigError::BadPort { .. })
        ));
    }
}
