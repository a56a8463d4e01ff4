//! The plugin's kubeconfig, made from the installer's own service account: the API server
//! from `KUBERNETES_SERVICE_HOST`/`PORT` (what the kubelet gives every pod), the cluster's CA
//! and the projected token embedded. Written as JSON (a kubeconfig may be YAML or JSON). The
//! token is embedded rather than referenced because the file the runtime reads lives on the
//! host, where the pod's projected volume is not; it is rewritten when the token rotates.

use std::path::Path;

use base64::Engine;
use serde_json::json;

use crate::config::EnvSource;

/// Why a kubeconfig cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{0} is not set: the installer must run in a pod (the kubelet sets it)")]
    NoEnv(&'static str),
    #[error("{var}: {value:?} is not a port")]
    BadPort { var: &'static str, value: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// The kubeconfig's bytes for the service account in `sa_dir`.
pub fn make(sa_dir: &Path, env: &dyn EnvSource) -> Result<Vec<u8>, KubeconfigError> {
    let host = env
        .var("KUBERNETES_SERVICE_HOST")
        .filter(|h| !h.is_empty())
        .ok_or(KubeconfigError::NoEnv("KUBERNETES_SERVICE_HOST"))?;
    let port = env
        .var("KUBERNETES_SERVICE_PORT")
        .unwrap_or_else(|| "443".into());
    let port: u16 = port.trim().parse().map_err(|_| KubeconfigError::BadPort {
        var: "KUBERNETES_SERVICE_PORT",
        value: port.clone(),
    })?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
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
            "server": format!("https://{host}:{port}"),
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
