//! Reading a pod from the Kubernetes API server, configured by a kubeconfig file (YAML or
//! JSON) the way istio-cni's installer writes one: the current context's cluster (`server`,
//! `certificate-authority[-data]`, `tls-server-name`, `insecure-skip-tls-verify`) and user
//! (`token`, `tokenFile`, `client-certificate[-data]` + `client-key[-data]`). Exec and
//! auth-provider plugins are refused with a message: the plugin runs no other programs.
//!
//! Every file is read bounded (`host::read_bounded`); the answer is decoded into the typed
//! `pod::Pod`. Failures say what the runtime should do: a kubeconfig that cannot work, a
//! certificate that does not verify, or credentials the server refuses (401/403) are
//! configuration errors naming the kubeconfig and the server; an unreachable or misbehaving
//! server is worth retrying.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;

use super::http;
use super::pod::Pod;
use crate::host::{MAX_FILE, read_bounded};
use crate::values::{NamespaceName, PodName};

/// Errors of the Kubernetes client.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig is unreadable, malformed or asks for something unsupported.
    #[error("kubeconfig {path}: {problem}")]
    Config { path: PathBuf, problem: String },
    /// The API server's certificate does not verify, or it refuses our credentials: retrying
    /// cannot help.
    #[error("kubeconfig {kubeconfig}: API server {server}: {problem}")]
    Rejected {
        kubeconfig: PathBuf,
        server: String,
        problem: String,
    },
    /// The API server could not be reached or answered with an error; worth retrying.
    #[error("reading pod {pod} from the API server {server}: {problem}")]
    Unavailable {
        pod: String,
        server: String,
        problem: String,
    },
    /// The API server says the pod does not exist.
    #[error("pod {0} does not exist (API server answered 404)")]
    NotFound(String),
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: T,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KubeConfig {
    clusters: Vec<Named<Cluster>>,
    users: Vec<Named<User>>,
    contexts: Vec<Named<Context>>,
    #[serde(rename = "current-context")]
    current_context: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(rename = "client-certificate")]
    client_certificate: Option<PathBuf>,
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key")]
    client_key: Option<PathBuf>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
    exec: Option<serde_yaml_ng::Value>,
    #[serde(rename = "auth-provider")]
    auth_provider: Option<serde_yaml_ng::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Context {
    cluster: String,
    user: String,
}

/// A client for one API server.
pub struct Client {
    http: http::Client,
    kubeconfig: PathBuf,
    server: String,
    /// A bearer token file is read per request, so a rotated token is picked up.
    token: Option<Token>,
}

enum Token {
    Inline(String),
    File(PathBuf),
}

impl Client {
    /// A client from the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<Client, KubeError> {
        let kc = Files { path }.load()?;
        let files = Files { path };
        let (cluster, user) = kc.selected(&files)?;
        let (host, port) = split_server(&cluster.server).map_err(|p| files.fail(p))?;
        let builder = files.verifier(cluster)?;
        let tls = files.client_auth(builder, user)?;
        let name = cluster
            .tls_server_name
            .clone()
            .unwrap_or_else(|| host.clone());
        let server_name = ServerName::try_from(name.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| files.fail(format!("server name {name:?}: {e}")))?
            .to_owned();
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(Token::Inline(t.clone())),
            (None, Some(p)) => Some(Token::File(files.dir().join(p))),
            (None, None) => None,
        };
        Ok(Client {
            http: http::Client::new(Arc::new(tls), server_name, &host, port, TIMEOUT),
            kubeconfig: path.to_path_buf(),
            server: cluster.server.clone(),
            token,
        })
    }

    /// `GET /api/v1/namespaces/NS/pods/NAME`, decoded.
    pub fn pod(&self, namespace: &NamespaceName, name: &PodName) -> Result<Pod, KubeError> {
        let id = format!("{namespace}/{name}");
        let unavailable = |problem: String| KubeError::Unavailable {
            pod: id.clone(),
            server: self.server.clone(),
            problem,
        };
        let rejected = |problem: String| KubeError::Rejected {
            kubeconfig: self.kubeconfig.clone(),
            server: self.server.clone(),
            problem,
        };
        let token = match &self.token {
            Some(Token::Inline(t)) => Some(t.trim().to_string()),
            Some(Token::File(p)) => Some(
                read_bounded(p, MAX_FILE)
                    .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                    .map_err(|e| rejected(format!("token file {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Accept", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let resp = self
            .http
            .get(&format!("/api/v1/namespaces/{namespace}/pods/{name}"), &headers)
            .map_err(|e| match e {
                http::HttpError::CertRejected(why) => rejected(format!(
                    "its certificate does not verify against the kubeconfig's certificate authority: {why}"
                )),
                http::HttpError::Unavailable(why) => unavailable(why),
            })?;
        let message = || {
            serde_json::from_slice::<serde_json::Value>(&resp.body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        };
        match resp.status {
            200 => serde_json::from_slice(&resp.body)
                .map_err(|e| unavailable(format!("the answer is not a pod: {e}"))),
            404 => Err(KubeError::NotFound(id)),
            code @ (401 | 403) => Err(rejected(format!(
                "HTTP {code}{}: the credentials are refused, or may not get pods",
                message()
            ))),
            code => Err(unavailable(format!("HTTP {code}{}", message()))),
        }
    }
}

/// How long one request may take, connection and TLS handshake included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The kubeconfig and the files it names: relative paths are relative to it, as kubectl reads
/// them; every file is read bounded; every problem names the kubeconfig.
struct Files<'a> {
    path: &'a Path,
}

type TlsBuilder = rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>;

impl Files<'_> {
    fn fail(&self, problem: String) -> KubeError {
        KubeError::Config {
            path: self.path.to_path_buf(),
            problem,
        }
    }

    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    fn load(&self) -> Result<KubeConfig, KubeError> {
        let text = read_bounded(self.path, MAX_FILE)
            .map_err(|e| self.fail(e.to_string()))
            .and_then(|b| String::from_utf8(b).map_err(|_| self.fail("not UTF-8 text".into())))?;
        serde_yaml_ng::from_str(&text).map_err(|e| self.fail(e.to_string()))
    }

    fn file(&self, p: &Path) -> Result<Vec<u8>, KubeError> {
        let p = self.dir().join(p);
        read_bounded(&p, MAX_FILE).map_err(|e| self.fail(format!("{}: {e}", p.display())))
    }

    fn b64(&self, what: &str, s: &str) -> Result<Vec<u8>, KubeError> {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| self.fail(format!("{what} is not base64: {e}")))
    }

    /// Inline data, else the file, else nothing.
    fn data_or_file(
        &self,
        what: &str,
        data: &Option<String>,
        file: &Option<PathBuf>,
    ) -> Result<Option<Vec<u8>>, KubeError> {
        match (data, file) {
            (Some(d), _) => self.b64(what, d).map(Some),
            (None, Some(p)) => self.file(p).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// How the API server's certificate is verified: the kubeconfig's CA, or (with
    /// `insecure-skip-tls-verify`, and a warning) not at all.
    fn verifier(&self, cluster: &Cluster) -> Result<TlsBuilder, KubeError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| self.fail(e.to_string()))?;
        if cluster.insecure_skip_tls_verify {
            crate::logging::warn(&format!(
                "kubeconfig {}: insecure-skip-tls-verify is set; the API server's certificate is not checked",
                self.path.display()
            ));
            return Ok(builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider))));
        }
        let pem = self
            .data_or_file(
                "certificate-authority-data",
                &cluster.certificate_authority_data,
                &cluster.certificate_authority,
            )?
            .ok_or_else(|| {
                self.fail("the cluster has no certificate-authority(-data): the API server's certificate cannot be verified".into())
            })?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let ca = |e: &dyn std::fmt::Display| self.fail(format!("certificate authority: {e}"));
            roots.add(cert.map_err(|e| ca(&e))?).map_err(|e| ca(&e))?;
        }
        if roots.is_empty() {
            return Err(self.fail("the certificate authority holds no certificate".into()));
        }
        Ok(builder.with_root_certificates(roots))
    }

    /// A client certificate and key, or none.
    fn client_auth(
        &self,
        builder: TlsBuilder,
        user: &User,
    ) -> Result<rustls::ClientConfig, KubeError> {
        let cert = self.data_or_file(
            "client-certificate-data",
            &user.client_certificate_data,
            &user.client_certificate,
        )?;
        let key = self.data_or_file("client-key-data", &user.client_key_data, &user.client_key)?;
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<_, _>>()
                    .map_err(|e| self.fail(format!("client certificate: {e}")))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| self.fail(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| self.fail(format!("client certificate: {e}")))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => {
                Err(self
                    .fail("a client certificate needs its key and a key its certificate".into()))
            }
        }
    }
}

impl KubeConfig {
    /// The current context's cluster and user (a single context needs no current-context).
    /// Exec and auth-provider credentials are refused: the plugin runs no other programs.
    fn selected<'a>(&'a self, files: &Files) -> Result<(&'a Cluster, &'a User), KubeError> {
        static NO_USER: std::sync::OnceLock<User> = std::sync::OnceLock::new();
        let context = if self.current_context.is_empty() && self.contexts.len() == 1 {
            &self.contexts[0]
        } else {
            self.contexts
                .iter()
                .find(|c| c.name == self.current_context)
                .ok_or_else(|| {
                    files.fail(format!(
                        "current-context {:?} is not among the contexts",
                        self.current_context
                    ))
                })?
        };
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == context.item.cluster)
            .map(|c| &c.item)
            .ok_or_else(|| {
                files.fail(format!("cluster {:?} is not defined", context.item.cluster))
            })?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == context.item.user)
            .map_or_else(|| NO_USER.get_or_init(User::default), |u| &u.item);
        if user.exec.is_some() || user.auth_provider.is_some() {
            return Err(files.fail(
                "exec and auth-provider credentials are not supported (the plugin runs no other programs); use a token, tokenFile or client certificate".into(),
            ));
        }
        Ok((cluster, user))
    }
}

/// `https://host[:port][/]` → (host, port). Only HTTPS: a pod's spec is not sent in clear.
fn split_server(server: &str) -> Result<(String, u16), String> {
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| format!("server {server:?} is not an https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("server {server:?}: unclosed ["))?;
        (h.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p
            .parse()
            .map_err(|_| format!("server {server:?}: bad port {p:?}"))?,
        None => 443,
    };
    if host.is_empty() {
        return Err(format!("server {server:?} has no host"));
    }
    Ok((host, port))
}

/// `insecure-skip-tls-verify`: accepts any certificate, still checks handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers() {
        assert_eq!(
            split_server("https://10.96.0.1:443").unwrap(),
            ("10.96.0.1".into(), 443)
        );
        assert_eq!(
            split_server("https://[fd00::1]:6443/").unwrap(),
            ("fd00::1".into(), 6443)
        );
        assert_eq!(
            split_server("https://api.example.com").unwrap(),
            ("api.example.com".into(), 443)
        );
        assert!(split_server("http://10.0.0.1").is_err());
        assert!(split_server("https://:443").is_err());
    }
}
