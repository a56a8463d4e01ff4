//! The Kubernetes client of the CNI plugin and the node agent, configured by a kubeconfig file
//! (YAML or JSON) the way istio-cni's installer writes one: the current context's cluster
//! (`server`, `certificate-authority[-data]`, `tls-server-name`, `insecure-skip-tls-verify`) and
//! user (`token`, `tokenFile`, `client-certificate[-data]` + `client-key[-data]`). Exec and
//! auth-provider plugins are refused with a message: the plugin runs no other programs.
//!
//! What it does: get a pod or a namespace, merge-patch a pod's status subresource (the
//! `ambient.istio.io/redirection` annotation, the sidecar repair's label), delete a pod with
//! preconditions (the sidecar repair's delete mode), list pods and namespaces, and watch them
//! from a resource version. Every request goes through one helper (`Client::send`/`Client::open`)
//! that adds the credentials and maps TLS and HTTP failures the same way.
//!
//! Every file is read bounded (`host::read_bounded`); answers are decoded into the typed
//! `pod::Pod` and `pod::Namespace`. Failures say what the caller should do: a kubeconfig that
//! cannot work, a certificate that does not verify, or credentials the server refuses
//! (401/403) are configuration errors naming the kubeconfig and the server; an unreachable or
//! misbehaving server is worth retrying.

use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::http;
use super::pod::{Namespace, Pod};
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
    /// `action` says what was asked ("reading pod shop/cart").
    #[error("{action} at the API server {server}: {problem}")]
    Unavailable {
        action: String,
        server: String,
        problem: String,
    },
    /// The API server says the object ("pod shop/cart", "namespace shop") does not exist.
    #[error("{0} does not exist (API server answered 404)")]
    NotFound(String),
}

/// Why a write (a status patch, a delete) failed. A write has one failure a read has not:
/// the server refusing the write itself (409 Conflict: a precondition no longer holds; 422
/// Unprocessable), which no retry of the same body fixes: read the pod again first. It is its
/// own type, not a `KubeError` variant, so the plugin's exhaustive handling of `KubeError`
/// (`cni::fetch_pod`) stays as it is.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// 409 or 422. `action` says what was asked ("deleting pod shop/cart").
    #[error("{action} at the API server {server}: HTTP {status}{message}")]
    Refused {
        action: String,
        server: String,
        status: u16,
        message: String,
    },
    /// Anything a read can fail with; `NotFound` when the pod is gone.
    #[error(transparent)]
    Kube(#[from] KubeError),
}

/// One change seen by a watch, with the object as it is after the change (for `Deleted`, as
/// it was last).
#[derive(Debug, Clone)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
}

/// How a watch ended, and what the caller does next. `resource_version` is the last one seen
/// (from an event's object or a bookmark), to watch again from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEnd {
    /// The server ended the stream (its `timeoutSeconds`, or it closed): watch again from
    /// `resource_version`.
    Closed { resource_version: String },
    /// The stream broke (dropped connection, reset, no whole event within the read timeout):
    /// watch again from `resource_version`, as client-go's stream watcher ends quietly on an
    /// EOF or a timeout and its reflector re-watches. `problem` is for the log.
    Broken {
        resource_version: String,
        problem: String,
    },
    /// The resource version is too old (HTTP 410, or an ERROR event with code 410 or reason
    /// Expired/Gone): list again.
    Expired,
    /// `on_event` asked to stop.
    Stopped { resource_version: String },
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
        let op = Op {
            action: format!("reading pod {namespace}/{name}"),
            object: Some(format!("pod {namespace}/{name}")),
            may: "get pods",
        };
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        self.get(&op, &path, &[], "a pod")
    }

    /// `GET /api/v1/namespaces/NAME`, decoded.
    pub fn namespace(&self, name: &NamespaceName) -> Result<Namespace, KubeError> {
        let op = Op {
            action: format!("reading namespace {name}"),
            object: Some(format!("namespace {name}")),
            may: "get namespaces",
        };
        self.get(
            &op,
            &format!("/api/v1/namespaces/{name}"),
            &[],
            "a namespace",
        )
    }

    /// `PATCH /api/v1/namespaces/NS/pods/NAME/status` with `patch` as a JSON merge patch.
    ///
    /// As istio-cni's `AnnotateEnrolledPod`, `AnnotatePartiallyEnrolledPod` and
    /// `AnnotateUnenrollPod` (cni/pkg/util/podutil.go): `types.MergePatchType`
    /// (`application/merge-patch+json`) on the `status` subresource, which may change the
    /// metadata and needs less privilege than patching the pod; their bodies are
    /// `{"metadata":{"annotations":{"ambient.istio.io/redirection":"enabled"}}}` (or
    /// `"pending"`, or `null` to remove it). 404 is `Kube(NotFound)` (upstream's unenrol
    /// ignores it), 409/422 `Refused`, 401/403 `Kube(Rejected)`.
    pub fn patch_pod_status(
        &self,
        namespace: &NamespaceName,
        name: &PodName,
        patch: &serde_json::Value,
    ) -> Result<(), PatchError> {
        let op = Op {
            action: format!("patching the status of pod {namespace}/{name}"),
            object: Some(format!("pod {namespace}/{name}")),
            may: "patch pods/status",
        };
        let body = serde_json::to_vec(patch)
            .map_err(|e| self.unavailable(&op, format!("the patch does not serialize: {e}")))?;
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}/status");
        let method = http::Method::Patch {
            content_type: MERGE_PATCH,
            body: &body,
        };
        let resp = self.send(&op, method, &path, &[])?;
        self.written(&op, &resp)
    }

    /// Labels pod `NS/NAME` `key=value`: a JSON merge patch of its labels on the `status`
    /// subresource, as istio-cni's repair controller labels a broken pod (`labelBrokenPod`:
    /// `{"metadata":{"labels":{KEY:VALUE}}}`, `types.MergePatchType`, subresource `status`,
    /// which may change the metadata and needs less privilege than patching the pod). The
    /// patch also carries the pod's `uid`: `metadata.uid` is immutable, so the API server
    /// refuses (422) the patch of another pod since created under the same name instead of
    /// labelling it. The body is built as JSON from typed values: nothing in them can add a key.
    pub fn label_pod(
        &self,
        namespace: &NamespaceName,
        name: &PodName,
        uid: &str,
        key: &crate::values::LabelKey,
        value: &crate::values::LabelValue,
    ) -> Result<(), PatchError> {
        let mut labels = serde_json::Map::new();
        labels.insert(key.as_str().into(), value.as_str().into());
        let patch = serde_json::json!({"metadata": {"uid": uid, "labels": labels}});
        self.patch_pod_status(namespace, name, &patch)
    }

    /// `DELETE /api/v1/namespaces/NS/pods/NAME` with `DeleteOptions` whose preconditions are
    /// `uid` and `resource_version`, as istio-cni's repair controller deletes a broken pod
    /// (`deleteBrokenPod`: "make sure we are deleting what we think we are"). No grace period
    /// is sent: the pod's own applies. A pod that changed since it was read (another
    /// incarnation, a newer version) is `Refused` with 409, a pod already gone
    /// `Kube(NotFound)`, 401/403 `Kube(Rejected)` (RBAC: `delete pods`).
    pub fn delete_pod(
        &self,
        namespace: &NamespaceName,
        name: &PodName,
        uid: &str,
        resource_version: &str,
    ) -> Result<(), PatchError> {
        let op = Op {
            action: format!("deleting pod {namespace}/{name}"),
            object: Some(format!("pod {namespace}/{name}")),
            may: "delete pods",
        };
        let options = serde_json::json!({
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": uid, "resourceVersion": resource_version},
        });
        let body = serde_json::to_vec(&options)
            .map_err(|e| self.unavailable(&op, format!("the options do not serialize: {e}")))?;
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}");
        let resp = self.send(&op, http::Method::Delete { body: &body }, &path, &[])?;
        self.written(&op, &resp)
    }

    /// A write's answer: 2xx is done, 409/422 the write refused, the rest as for a read.
    fn written(&self, op: &Op, resp: &http::Response) -> Result<(), PatchError> {
        match resp.status {
            200..=299 => Ok(()),
            status @ (409 | 422) => Err(PatchError::Refused {
                action: op.action.clone(),
                server: self.server.clone(),
                status,
                message: message(&resp.body),
            }),
            status => Err(self.status_error(op, status, &resp.body).into()),
        }
    }

    /// `GET /api/v1/pods?fieldSelector=F[&labelSelector=L]`: every pod the selectors match
    /// (`spec.nodeName=NODE` for this node's), and the list's resource version to watch from.
    /// The selectors are percent-encoded as query values: they cannot add a parameter.
    pub fn list_pods(
        &self,
        field_selector: &str,
        label_selector: Option<&str>,
    ) -> Result<(Vec<Pod>, String), KubeError> {
        let mut query = vec![("fieldSelector", field_selector)];
        if let Some(l) = label_selector {
            query.push(("labelSelector", l));
        }
        let op = Op {
            action: format!("listing pods ({})", describe(&query)),
            object: None,
            may: "list pods",
        };
        self.list(&op, &query)
    }

    /// `GET /api/v1/namespaces`: every namespace, and the list's resource version.
    pub fn list_namespaces(&self) -> Result<(Vec<Namespace>, String), KubeError> {
        let op = Op {
            action: "listing namespaces".into(),
            object: None,
            may: "list namespaces",
        };
        self.list(&op, &[])
    }

    /// Watches pods matching `field_selector` from `resource_version` (see `watch`).
    pub fn watch_pods(
        &self,
        field_selector: &str,
        resource_version: &str,
        timeout_seconds: u32,
        on_event: &mut dyn FnMut(WatchEvent<Pod>) -> ControlFlow<()>,
    ) -> Result<WatchEnd, KubeError> {
        let query = [("fieldSelector", field_selector)];
        let op = Op {
            action: format!("watching pods ({})", describe(&query)),
            object: None,
            may: "watch pods",
        };
        self.watch(&op, &query, resource_version, timeout_seconds, on_event)
    }

    /// Watches namespaces from `resource_version` (see `watch`).
    pub fn watch_namespaces(
        &self,
        resource_version: &str,
        timeout_seconds: u32,
        on_event: &mut dyn FnMut(WatchEvent<Namespace>) -> ControlFlow<()>,
    ) -> Result<WatchEnd, KubeError> {
        let op = Op {
            action: "watching namespaces".into(),
            object: None,
            may: "watch namespaces",
        };
        self.watch(&op, &[], resource_version, timeout_seconds, on_event)
    }

    /// A GET of one object, decoded; 404 is `NotFound`.
    fn get<T: DeserializeOwned>(
        &self,
        op: &Op,
        path: &str,
        query: &[(&str, &str)],
        what: &str,
    ) -> Result<T, KubeError> {
        let resp = self.send(op, http::Method::Get, path, query)?;
        match resp.status {
            200 => serde_json::from_slice(&resp.body)
                .map_err(|e| self.unavailable(op, format!("the answer is not {what}: {e}"))),
            status => Err(self.status_error(op, status, &resp.body)),
        }
    }

    /// A list of `T`'s collection, whole: its items and resource version. No `limit` is sent,
    /// so the server answers in one piece; an answer that says it continues is refused rather
    /// than taken for the whole list.
    fn list<T: Resource>(
        &self,
        op: &Op,
        query: &[(&str, &str)],
    ) -> Result<(Vec<T>, String), KubeError> {
        let list: List<T> = self.get(op, T::COLLECTION, query, T::LIST)?;
        if !list.metadata.continue_token.is_empty() {
            return Err(self.unavailable(
                op,
                "the server answered one page of the list (metadata.continue is set)".into(),
            ));
        }
        if list.metadata.resource_version.is_empty() {
            return Err(self.unavailable(
                op,
                "the list has no metadata.resourceVersion to watch from".into(),
            ));
        }
        Ok((list.items, list.metadata.resource_version))
    }

    /// Watches `T`'s collection from `resource_version`: `GET
    /// COLLECTION?watch=1&allowWatchBookmarks=true&resourceVersion=RV&timeoutSeconds=N`,
    /// reading the stream of newline-delimited JSON events one line at a time, each at most
    /// `MAX_EVENT` bytes. No total timeout applies to the stream: the server ends it after
    /// `timeout_seconds` (at least 1); each line must arrive within `timeout_seconds +
    /// LINE_SLACK`, so a server that stalls cannot hold the caller for longer.
    ///
    /// ADDED, MODIFIED and DELETED go to `on_event` in order, and their object's resource
    /// version becomes the one to resume from; a BOOKMARK only moves that version. What
    /// client-go's reflector does with the rest, this does too: an ERROR event with code 410
    /// or reason Expired/Gone (too old resource version) is `Expired` (list again); any other ERROR event, and an
    /// event that does not decode (not JSON, an unknown type, an object not of the watched
    /// kind), ends the watch with an error: client-go's stream watcher turns a decode failure
    /// into an ERROR event and stops, and the reflector lists again rather than skip an event
    /// and miss a change. A line longer than `MAX_EVENT` is an error too. The stream ending
    /// is `Closed`; breaking (EOF mid-stream, reset, read timeout) is `Broken`, both with the
    /// version to watch again from, as client-go's stream watcher ends quietly on those.
    fn watch<T: Resource>(
        &self,
        op: &Op,
        selectors: &[(&str, &str)],
        resource_version: &str,
        timeout_seconds: u32,
        on_event: &mut dyn FnMut(WatchEvent<T>) -> ControlFlow<()>,
    ) -> Result<WatchEnd, KubeError> {
        let timeout_seconds = timeout_seconds.max(1);
        let seconds = timeout_seconds.to_string();
        let mut query = vec![
            ("watch", "1"),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", seconds.as_str()),
        ];
        query.extend_from_slice(selectors);
        let line_timeout = Duration::from_secs(timeout_seconds.into()) + LINE_SLACK;
        let streamed = self.open(op, T::COLLECTION, &query, line_timeout)?;
        let mut body = streamed.body;
        match streamed.status {
            200 => {}
            410 => return Ok(WatchEnd::Expired),
            status => {
                let mut text = Vec::new();
                // The error's own text is small; what is beyond the bound is not read.
                let _ = (&mut body).take(MAX_ERROR_BODY).read_to_end(&mut text);
                return Err(self.status_error(op, status, &text));
            }
        }
        let mut reader = BufReader::with_capacity(64 << 10, body);
        let mut line = Vec::new();
        let mut version = resource_version.to_string();
        let mut seen = 0usize;
        loop {
            match next_line(&mut reader, &mut line, MAX_EVENT, line_timeout) {
                Ok(true) => {}
                Ok(false) => {
                    return Ok(WatchEnd::Closed {
                        resource_version: version,
                    });
                }
                Err(Line::TooLong) => {
                    return Err(self.unavailable(
                        op,
                        format!("event {} is longer than {MAX_EVENT} bytes", seen + 1),
                    ));
                }
                Err(Line::Broken(problem)) => {
                    return Ok(WatchEnd::Broken {
                        resource_version: version,
                        problem: format!("after {seen} events: {problem}"),
                    });
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            seen += 1;
            let bad = |problem: String| self.unavailable(op, format!("event {seen}: {problem}"));
            let event: RawEvent = serde_json::from_slice(&line)
                .map_err(|e| bad(format!("not a watch event: {e}")))?;
            let wrap = match event.kind.as_str() {
                "ADDED" => WatchEvent::Added,
                "MODIFIED" => WatchEvent::Modified,
                "DELETED" => WatchEvent::Deleted,
                "BOOKMARK" => {
                    let mark: Bookmark = serde_json::from_value(event.object)
                        .map_err(|e| bad(format!("a BOOKMARK without its version: {e}")))?;
                    if mark.metadata.resource_version.is_empty() {
                        return Err(bad("a BOOKMARK without a resourceVersion".into()));
                    }
                    version = mark.metadata.resource_version;
                    continue;
                }
                "ERROR" => {
                    let status: Status = serde_json::from_value(event.object)
                        .map_err(|e| bad(format!("an ERROR that is not a Status: {e}")))?;
                    // client-go's isExpiredError: reason Expired or Gone, or code 410.
                    if status.code == 410 || status.reason == "Expired" || status.reason == "Gone" {
                        return Ok(WatchEnd::Expired);
                    }
                    return Err(bad(format!(
                        "the server ended the watch: {} {}: {}",
                        status.code, status.reason, status.message
                    )));
                }
                other => {
                    return Err(bad(format!(
                        "unknown event type {other:?} (expected ADDED, MODIFIED, DELETED, BOOKMARK or ERROR)"
                    )));
                }
            };
            let object: T = serde_json::from_value(event.object)
                .map_err(|e| bad(format!("{} object is not {}: {e}", event.kind, T::ONE)))?;
            if !object.resource_version().is_empty() {
                version = object.resource_version().to_string();
            }
            if on_event(wrap(object)).is_break() {
                return Ok(WatchEnd::Stopped {
                    resource_version: version,
                });
            }
        }
    }

    /// The request helper every exchange goes through: credentials, then TLS and transport
    /// failures mapped. The answer comes back whatever its status.
    fn send(
        &self,
        op: &Op,
        method: http::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<http::Response, KubeError> {
        let auth = self.authorization()?;
        let headers = headers(&auth);
        let request = http::Request {
            path,
            query,
            headers: &headers,
        };
        self.http
            .request(method, &request)
            .map_err(|e| self.transport_error(op, e))
    }

    /// `send` for a stream (a GET): the body is left to read, each read bounded by `per_read`.
    fn open(
        &self,
        op: &Op,
        path: &str,
        query: &[(&str, &str)],
        per_read: Duration,
    ) -> Result<http::Streamed, KubeError> {
        let auth = self.authorization()?;
        let headers = headers(&auth);
        let request = http::Request {
            path,
            query,
            headers: &headers,
        };
        self.http
            .stream(&request, per_read)
            .map_err(|e| self.transport_error(op, e))
    }

    /// `Bearer TOKEN`, the token file read now (a rotated token is picked up).
    fn authorization(&self) -> Result<Option<String>, KubeError> {
        let token = match &self.token {
            Some(Token::Inline(t)) => t.trim().to_string(),
            Some(Token::File(p)) => read_bounded(p, MAX_FILE)
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .map_err(|e| self.rejected(format!("token file {}: {e}", p.display())))?,
            None => return Ok(None),
        };
        Ok(Some(format!("Bearer {token}")))
    }

    fn transport_error(&self, op: &Op, e: http::HttpError) -> KubeError {
        match e {
            http::HttpError::CertRejected(why) => self.rejected(format!(
                "its certificate does not verify against the kubeconfig's certificate authority: {why}"
            )),
            http::HttpError::Unavailable(why) => self.unavailable(op, why),
        }
    }

    /// An answer other than success: 404 names the object (for a collection it is the
    /// server misbehaving), 401/403 are our credentials or RBAC, the rest worth retrying.
    fn status_error(&self, op: &Op, status: u16, body: &[u8]) -> KubeError {
        match (status, &op.object) {
            (404, Some(object)) => KubeError::NotFound(object.clone()),
            (401 | 403, _) => self.rejected(format!(
                "HTTP {status}{}: the credentials are refused, or may not {}",
                message(body),
                op.may
            )),
            _ => self.unavailable(op, format!("HTTP {status}{}", message(body))),
        }
    }

    fn unavailable(&self, op: &Op, problem: String) -> KubeError {
        KubeError::Unavailable {
            action: op.action.clone(),
            server: self.server.clone(),
            problem,
        }
    }

    fn rejected(&self, problem: String) -> KubeError {
        KubeError::Rejected {
            kubeconfig: self.kubeconfig.clone(),
            server: self.server.clone(),
            problem,
        }
    }
}

/// What a request is for, as its errors say it.
struct Op {
    /// "reading pod shop/cart".
    action: String,
    /// What a 404 means is missing, for a request of one object.
    object: Option<String>,
    /// The RBAC verb and resource the request needs ("get pods"), for a 403.
    may: &'static str,
}

fn headers(auth: &Option<String>) -> Vec<(&'static str, &str)> {
    let mut headers = vec![("Accept", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a.as_str()));
    }
    headers
}

/// `fieldSelector=spec.nodeName=n1, labelSelector=...`, for messages.
fn describe(query: &[(&str, &str)]) -> String {
    query
        .iter()
        .map(|(k, v)| format!("{k} {v:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `: MESSAGE` from a Kubernetes Status body, or nothing.
fn message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// The content type of a JSON merge patch (RFC 7386), Kubernetes' `types.MergePatchType`.
const MERGE_PATCH: &str = "application/merge-patch+json";

/// The longest watch event accepted. A pod is a few KB; the API server's own limit on an
/// object is about 1.5 MB (etcd's request size), so 4 MiB is room, not a constraint.
pub const MAX_EVENT: usize = 4 << 20;

/// How much longer than `timeoutSeconds` a watch waits for its next line: the server closes
/// an idle watch at `timeoutSeconds`, so a longer silence is a stalled stream.
pub const LINE_SLACK: Duration = Duration::from_secs(5);

/// How much of a refused watch's answer is read for its message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A kind the client lists and watches.
trait Resource: DeserializeOwned {
    /// The collection's path.
    const COLLECTION: &'static str;
    /// "a pod", for messages.
    const ONE: &'static str;
    /// "a pod list", for messages.
    const LIST: &'static str;
    fn resource_version(&self) -> &str;
}

impl Resource for Pod {
    const COLLECTION: &'static str = "/api/v1/pods";
    const ONE: &'static str = "a pod";
    const LIST: &'static str = "a pod list";
    fn resource_version(&self) -> &str {
        &self.metadata.resource_version
    }
}

impl Resource for Namespace {
    const COLLECTION: &'static str = "/api/v1/namespaces";
    const ONE: &'static str = "a namespace";
    const LIST: &'static str = "a namespace list";
    fn resource_version(&self) -> &str {
        &self.metadata.resource_version
    }
}

/// A list answer (`PodList`, `NamespaceList`).
#[derive(Deserialize)]
struct List<T> {
    #[serde(default)]
    metadata: ListMeta,
    items: Vec<T>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ListMeta {
    resource_version: String,
    #[serde(rename = "continue")]
    continue_token: String,
}

/// One line of a watch stream, its object decoded once the type says what it is.
#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// A BOOKMARK's object: only its resource version is meaningful.
#[derive(Deserialize)]
struct Bookmark {
    metadata: ListMeta,
}

/// The `Status` an ERROR event carries.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    code: u16,
    reason: String,
    message: String,
}

/// Why no line came.
enum Line {
    /// Longer than the bound; the stream cannot be resynchronised.
    TooLong,
    /// The stream broke or stalled.
    Broken(String),
}

/// Reads the next line (through `\n`, or what is left at the end) into `line`, at most `max`
/// bytes besides the newline, within `deadline` of starting it (each read is bounded by the
/// transport's own per-read timeout, so the check runs at least that often). `Ok(false)` at
/// the end of the stream.
fn next_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    max: usize,
    deadline: Duration,
) -> Result<bool, Line> {
    line.clear();
    let started = Instant::now();
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Line::Broken(e.to_string())),
        };
        if buf.is_empty() {
            return Ok(!line.is_empty());
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if line.len() + take > max + usize::from(done) {
            return Err(Line::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        reader.consume(take);
        if done {
            return Ok(true);
        }
        if started.elapsed() > deadline {
            return Err(Line::Broken(format!(
                "no whole event within {}s",
                deadline.as_secs()
            )));
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
