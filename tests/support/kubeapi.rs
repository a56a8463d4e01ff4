//! A fake Kubernetes API server for the node agent's tests and benchmark: pods and namespaces
//! by name, `GET` of one, lists, watches (chunked JSON lines of every change after a
//! resource version, for a second at a time; an ERROR 410 on demand), `PATCH
//! pods/NAME/status` recorded and applied as a JSON merge patch (one that would change
//! `metadata.uid` refused with 422, as the API server's immutable field), and `DELETE
//! pods/NAME` recorded and applied as the API server does to a pod bound to a node: its
//! `DeleteOptions` preconditions (uid, resourceVersion) checked (409 when they do not hold),
//! then `deletionTimestamp` set (a MODIFIED event; the kubelet would remove it later), and a
//! pod already terminating answered as it is. Served over TLS on 127.0.0.1 inside a chosen
//! network namespace (the node's).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Default)]
pub struct ApiState {
    pods: HashMap<String, Value>,
    namespaces: HashMap<String, Value>,
    /// (content type, body) of every PATCH of a pod's status, in order.
    patches: Vec<(String, String, Value)>,
    /// (ns/name, DeleteOptions) of every DELETE of a pod, in order.
    deletes: Vec<(String, Value)>,
    /// The resource version: one more per change.
    rv: u64,
    /// Every change: (version, "pods" or "namespaces", ADDED|MODIFIED|DELETED, object).
    events: Vec<(u64, &'static str, &'static str, Value)>,
    /// Faults (hostile trials): every watch answered 410 Gone at once; lists of pods
    /// answered after this delay (with the state as it was when asked); lists answered with
    /// bytes that are not JSON.
    pub expire_watches: bool,
    pub list_delay: Duration,
    pub garbage_lists: bool,
    /// Lists of pods asked for (faults or not).
    pub pod_lists: u64,
    /// Fault: every watch ends at once, with no event.
    pub close_watches: bool,
    /// Watches of pods asked for.
    pub pod_watches: u64,
    /// Pod watches still to answer with an ERROR event of code 410 inside the stream (as
    /// the API server says a version expired mid-watch), and how many were answered so.
    pub expire_pod_watches: usize,
    pub expired: usize,
    /// Fault: watches deliver nothing while set (a watch lagging behind the API, as under
    /// load); what changed meanwhile comes, in order, once it is cleared.
    pub hold_watches: bool,
}

impl ApiState {
    /// Records a change of `object` (its resourceVersion set to the new version).
    fn change(&mut self, kind: &'static str, what: &'static str, object: &mut Value) {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.events.push((self.rv, kind, what, object.clone()));
    }
}

pub struct Api {
    pub port: u16,
    pub ca_pem: String,
    state: Arc<Mutex<ApiState>>,
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Api {
    /// Listens on 127.0.0.1 inside the network namespace at `netns` (the socket stays in
    /// it), with `tls` (a server configuration and its CA, `apiserver::tls_server`), and
    /// accepts requests bearing `token`.
    pub fn start(netns: &str, tls: (Arc<rustls::ServerConfig>, String), token: &str) -> Api {
        let (config, ca_pem) = tls;
        let path = netns.to_string();
        let token = token.to_string();
        let listener = std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap();
        let port = listener.local_addr().unwrap().port();
        let state: Arc<Mutex<ApiState>> = Arc::default();
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, state, token) = (config.clone(), s.clone(), token.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    serve(&mut tls, &state, &token);
                });
            }
        });
        Api {
            port,
            ca_pem,
            state,
        }
    }

    pub fn add_pod(&self, mut pod: Value) {
        let key = format!(
            "{}/{}",
            pod["metadata"]["namespace"].as_str().unwrap(),
            pod["metadata"]["name"].as_str().unwrap()
        );
        let mut st = self.state.lock().unwrap();
        let what = if st.pods.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.change("pods", what, &mut pod);
        st.pods.insert(key, pod);
    }

    /// Changes pod `ns/name` with `f` (a watch sees it MODIFIED).
    pub fn modify_pod(&self, key: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.state.lock().unwrap();
        let mut pod = st.pods.get(key).cloned().unwrap();
        f(&mut pod);
        st.change("pods", "MODIFIED", &mut pod);
        st.pods.insert(key.into(), pod);
    }

    pub fn delete_pod(&self, key: &str) {
        let mut st = self.state.lock().unwrap();
        let mut pod = st.pods.remove(key).unwrap();
        st.change("pods", "DELETED", &mut pod);
    }

    /// The next `n` pod watches answer an ERROR 410 event.
    pub fn expire_pod_watches(&self, n: usize) {
        self.state.lock().unwrap().expire_pod_watches = n;
    }

    /// How many pod watches were answered with an ERROR 410 event.
    pub fn expired(&self) -> usize {
        self.state.lock().unwrap().expired
    }

    pub fn pod(&self, key: &str) -> Value {
        self.state.lock().unwrap().pods.get(key).cloned().unwrap()
    }

    pub fn add_namespace(&self, name: &str, labels: Value) {
        let mut ns = json!({"kind": "Namespace", "apiVersion": "v1",
            "metadata": {"name": name, "labels": labels}});
        let mut st = self.state.lock().unwrap();
        let what = if st.namespaces.contains_key(name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.change("namespaces", what, &mut ns);
        st.namespaces.insert(name.into(), ns);
    }

    /// The values the pod's redirection annotation was patched to, in order (None: removed).
    pub fn redirections(&self) -> Vec<Option<String>> {
        self.state
            .lock()
            .unwrap()
            .patches
            .iter()
            .map(|(_, _, body)| {
                body["metadata"]["annotations"]["ambient.istio.io/redirection"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    }

    pub fn fault(&self, f: impl FnOnce(&mut ApiState)) {
        f(&mut self.state.lock().unwrap());
    }

    pub fn pod_watches(&self) -> u64 {
        self.state.lock().unwrap().pod_watches
    }

    pub fn pod_lists(&self) -> u64 {
        self.state.lock().unwrap().pod_lists
    }

    pub fn patches(&self) -> Vec<(String, String, Value)> {
        self.state.lock().unwrap().patches.clone()
    }

    /// The pods DELETE was asked for (ns/name, DeleteOptions), in order.
    pub fn deletes(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().deletes.clone()
    }

    /// The pods whose labels were patched (ns/name, the labels patched), in order.
    pub fn label_patches(&self) -> Vec<(String, Value)> {
        self.patches()
            .into_iter()
            .filter_map(|(_, pod, body)| {
                let labels = body["metadata"].get("labels")?.clone();
                Some((pod, labels))
            })
            .collect()
    }
}

fn serve(tls: &mut impl ReadWrite, state: &Mutex<ApiState>, token: &str) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or("").to_string(),
        words.next().unwrap_or("").to_string(),
    );
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let authorized = header("authorization") == Some(format!("Bearer {token}"));
    let len: usize = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    if tls.read_exact(&mut body).is_err() {
        return;
    }
    let not_found = (404, json!({"kind": "Status", "message": "not found"}));
    let query = path
        .split_once('?')
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    let param = |k: &str| {
        query.split('&').find_map(|kv| {
            let (a, b) = kv.split_once('=')?;
            (a == k).then(|| b.to_string())
        })
    };
    let route = path.split('?').next().unwrap_or("").to_string();
    let list_kind = match route.as_str() {
        "/api/v1/pods" => Some("pods"),
        "/api/v1/namespaces" => Some("namespaces"),
        _ => None,
    };
    if authorized && let Some(kind) = list_kind {
        if param("watch").is_some() && state.lock().unwrap().expire_watches {
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Expired","code":410}"#;
            let out = format!(
                "HTTP/1.1 410 Gone\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(out.as_bytes());
            let _ = tls.flush();
            return;
        }
        if param("watch").is_some() && kind == "pods" {
            let mut st = state.lock().unwrap();
            st.pod_watches += 1;
            if st.close_watches {
                drop(st);
                let out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
                let _ = tls.write_all(out.as_bytes());
                let _ = tls.flush();
                return;
            }
        }
        if param("watch").is_some() {
            let from: u64 = param("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return watch(tls, state, kind, from);
        }
        let mut st = state.lock().unwrap();
        let items: Vec<Value> = match kind {
            "pods" => st.pods.values().cloned().collect(),
            _ => st.namespaces.values().cloned().collect(),
        };
        let list = json!({"kind": "List", "apiVersion": "v1",
            "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        let (delay, garbage) = (st.list_delay, st.garbage_lists);
        if kind == "pods" {
            st.pod_lists += 1;
        }
        drop(st);
        if kind == "pods" {
            std::thread::sleep(delay);
        }
        let body = if garbage {
            "{\"kind\": \"List\", \"items\": [{".to_string()
        } else {
            list.to_string()
        };
        let out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tls.write_all(out.as_bytes());
        let _ = tls.flush();
        return;
    }
    let (status, reply) = if !authorized {
        (401, json!({"kind": "Status", "message": "Unauthorized"}))
    } else {
        let rest = path
            .split('?')
            .next()
            .unwrap_or("")
            .strip_prefix("/api/v1/namespaces/")
            .unwrap_or("")
            .to_string();
        let parts: Vec<&str> = rest.split('/').collect();
        let mut st = state.lock().unwrap();
        match (method.as_str(), parts.as_slice()) {
            ("GET", [ns]) => st
                .namespaces
                .get(*ns)
                .cloned()
                .map_or(not_found, |n| (200, n)),
            ("GET", [ns, "pods", name]) => st
                .pods
                .get(&format!("{ns}/{name}"))
                .cloned()
                .map_or(not_found, |p| (200, p)),
            ("PATCH", [ns, "pods", name, "status"]) => {
                let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                st.patches.push((
                    header("content-type").unwrap_or_default(),
                    format!("{ns}/{name}"),
                    patch.clone(),
                ));
                let uid = patch["metadata"]["uid"].as_str();
                match st.pods.get(&format!("{ns}/{name}")).cloned() {
                    Some(p) if uid.is_some_and(|u| Some(u) != p["metadata"]["uid"].as_str()) => (
                        422,
                        json!({"kind": "Status", "code": 422, "reason": "Invalid",
                            "message": "metadata.uid: Invalid value: field is immutable"}),
                    ),
                    Some(mut p) => {
                        merge(&mut p, &patch);
                        st.change("pods", "MODIFIED", &mut p);
                        st.pods.insert(format!("{ns}/{name}"), p.clone());
                        (200, p)
                    }
                    None => not_found,
                }
            }
            ("DELETE", [ns, "pods", name]) => {
                let key = format!("{ns}/{name}");
                let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                st.deletes.push((key.clone(), options.clone()));
                let pre = &options["preconditions"];
                let holds = |p: &Value, field: &str| {
                    pre[field]
                        .as_str()
                        .is_none_or(|want| p["metadata"][field].as_str() == Some(want))
                };
                match st.pods.get(&key).cloned() {
                    None => not_found,
                    Some(p) if !holds(&p, "uid") || !holds(&p, "resourceVersion") => (
                        409,
                        json!({"kind": "Status", "code": 409, "reason": "Conflict",
                            "message": "Precondition failed"}),
                    ),
                    Some(p) if p["metadata"]["deletionTimestamp"].is_string() => (200, p),
                    Some(mut p) => {
                        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T00:00:00Z");
                        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                        st.change("pods", "MODIFIED", &mut p);
                        st.pods.insert(key, p.clone());
                        (200, p)
                    }
                }
            }
            _ => not_found,
        }
    };
    let body = reply.to_string();
    let text = match status {
        200 => "OK",
        401 => "Unauthorized",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        _ => "Not Found",
    };
    let out = format!(
        "HTTP/1.1 {status} {text}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tls.write_all(out.as_bytes());
    let _ = tls.flush();
}

/// A watch: the events of `kind` after version `from`, as a chunked stream of JSON lines,
/// for up to a second (then the stream ends and the client watches again from the last).
fn watch(tls: &mut impl ReadWrite, state: &Mutex<ApiState>, kind: &str, mut from: u64) {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    if tls.write_all(head.as_bytes()).is_err() {
        return;
    }
    {
        let mut st = state.lock().unwrap();
        if kind == "pods" && st.expire_pod_watches > 0 {
            st.expire_pod_watches -= 1;
            st.expired += 1;
            let line = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": "too old resource version"}})
            .to_string()
                + "\n";
            let _ = tls.write_all(format!("{:x}\r\n{line}\r\n0\r\n\r\n", line.len()).as_bytes());
            let _ = tls.flush();
            return;
        }
    }
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        let st = state.lock().unwrap();
        let held = st.hold_watches;
        let lines: Vec<(u64, String)> = st
            .events
            .iter()
            .filter(|(v, k, _, _)| !held && *v > from && *k == kind)
            .map(|(v, _, what, obj)| (*v, json!({"type": what, "object": obj}).to_string() + "\n"))
            .collect();
        drop(st);
        for (v, line) in lines {
            let chunk = format!("{:x}\r\n{line}\r\n", line.len());
            if tls
                .write_all(chunk.as_bytes())
                .and_then(|()| tls.flush())
                .is_err()
            {
                return;
            }
            from = v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = tls.write_all(b"0\r\n\r\n");
    let _ = tls.flush();
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

// ---------------------------------------------------------------------------------------
