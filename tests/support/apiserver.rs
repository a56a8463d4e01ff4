//! Fake Kubernetes API servers for CNI and client tests, all HTTPS (a throwaway CA and a server
//! certificate for 127.0.0.1, made with rcgen): `ApiServer` (bearer-token auth, `GET
//! /api/v1/namespaces/NS/pods/NAME` answered from a map of pod JSON, requests counted),
//! `RawServer` (each connection answered with queued raw bytes, for fuzzing the response
//! reader) and `ScriptedServer` (each connection answered by a queued script of bytes, stalls
//! and a clean close, every request recorded with its method, path, query, headers and body:
//! patches, lists and watch streams). It writes the kubeconfig a CNI plugin would be given.

#![allow(dead_code, reason = "each test binary uses part of it")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::Value;

pub const TOKEN: &str = "test-token-5f1c";

pub struct ApiServer {
    pub port: u16,
    pub ca_pem: String,
    pub requests: Arc<AtomicUsize>,
    pods: Arc<Mutex<HashMap<String, Value>>>,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let (config, ca_pem) = tls_server();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let pods: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (p, r) = (pods.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (config, pods, requests) = (config.clone(), p.clone(), r.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    requests.fetch_add(1, Ordering::SeqCst);
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    // Header names are case-insensitive (ureq sends them in lower case).
                    let authorized = head.lines().any(|l| {
                        l.split_once(':').is_some_and(|(k, v)| {
                            k.eq_ignore_ascii_case("authorization")
                                && v.trim() == format!("Bearer {TOKEN}")
                        })
                    });
                    let (status, body) = if !authorized {
                        (
                            "401 Unauthorized",
                            r#"{"kind":"Status","message":"Unauthorized"}"#.to_string(),
                        )
                    } else {
                        let key = path.strip_prefix("/api/v1/namespaces/").and_then(|rest| {
                            let (ns, name) = rest.split_once("/pods/")?;
                            Some(format!("{ns}/{name}"))
                        });
                        match key.and_then(|k| pods.lock().unwrap().get(&k).cloned()) {
                            Some(pod) => ("200 OK", pod.to_string()),
                            None => (
                                "404 Not Found",
                                r#"{"kind":"Status","message":"pods not found"}"#.to_string(),
                            ),
                        }
                    };
                    // Chunked, as the real API server answers.
                    let reply = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes());
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        ApiServer {
            port,
            ca_pem,
            requests,
            pods,
        }
    }

    pub fn add_pod(&self, pod: Value) {
        let ns = pod["metadata"]["namespace"].as_str().unwrap().to_string();
        let name = pod["metadata"]["name"].as_str().unwrap().to_string();
        self.pods
            .lock()
            .unwrap()
            .insert(format!("{ns}/{name}"), pod);
    }

    /// A kubeconfig (YAML, as istio-cni's installer writes it) for this server.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority-data: {ca}\nusers:\n- name: meshtables-cni\n  user:\n    token: \"{TOKEN}\"\ncontexts:\n- name: cni\n  context:\n    cluster: local\n    user: meshtables-cni\ncurrent-context: cni\n",
            self.port
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// A TLS server that answers each connection with the next queued raw bytes (whatever they
/// are: a broken status line, a lying Content-Length, a truncated chunk), then closes, with or
/// without close_notify. For fuzzing the client's response reader.
pub struct RawServer {
    pub port: u16,
    pub ca_pem: String,
    queue: std::sync::mpsc::Sender<(Vec<u8>, bool)>,
}

/// A CA and a server certificate for 127.0.0.1 signed by it, as a rustls server config.
pub fn tls_server() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (Arc::new(config), ca.pem())
}

impl RawServer {
    pub fn start() -> RawServer {
        let (config, ca_pem) = tls_server();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel::<(Vec<u8>, bool)>();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok((reply, close_notify)) = rx.recv() else {
                    return;
                };
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => break,
                    }
                }
                let _ = tls.write_all(&reply);
                if close_notify {
                    tls.conn.send_close_notify();
                }
                let _ = tls.flush();
            }
        });
        RawServer {
            port,
            ca_pem,
            queue: tx,
        }
    }

    /// The next connection gets `reply`.
    pub fn queue(&self, reply: Vec<u8>, close_notify: bool) {
        self.queue.send((reply, close_notify)).unwrap();
    }
}

/// A kubeconfig for `https://127.0.0.1:PORT` with `ca_pem` as its CA and a token.
pub fn kubeconfig_for(dir: &Path, name: &str, port: u16, ca_pem: &str) -> PathBuf {
    let path = dir.join(name);
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority-data: {ca}\nusers:\n- name: meshtables-cni\n  user:\n    token: \"{TOKEN}\"\ncontexts:\n- name: cni\n  context:\n    cluster: local\n    user: meshtables-cni\ncurrent-context: cni\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// One step of a scripted answer.
pub enum Step {
    /// These bytes, as they are.
    Send(Vec<u8>),
    /// Nothing for this long, the connection held open.
    Stall(std::time::Duration),
    /// TLS close_notify: a clean end of the connection.
    CloseNotify,
}

/// A request as the scripted server read it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query (after `?`), as sent.
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// A header's value (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The query's pairs, percent-decoded (`+` is a space, as Go's url.ParseQuery reads it).
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        if self.query.is_empty() {
            return Vec::new();
        }
        self.query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// A TLS server that answers each connection with the next queued script (bytes, stalls, a
/// clean close) after reading the whole request (head, and a body by its Content-Length),
/// and records every request. For the client's PATCH, list and watch paths.
pub struct ScriptedServer {
    pub port: u16,
    pub ca_pem: String,
    scripts: std::sync::mpsc::Sender<Vec<Step>>,
    seen: Mutex<std::sync::mpsc::Receiver<Seen>>,
}

impl ScriptedServer {
    pub fn start() -> ScriptedServer {
        let (config, ca_pem) = tls_server();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Step>>();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<Seen>();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(script) = rx.recv() else {
                    return;
                };
                let (config, seen_tx) = (config.clone(), seen_tx.clone());
                // Each connection on its own thread: a stalled one does not hold the next.
                std::thread::spawn(move || {
                    let Ok(conn) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    let Some(seen) = read_request(&mut tls) else {
                        return;
                    };
                    let _ = seen_tx.send(seen);
                    for step in script {
                        match step {
                            Step::Send(bytes) => {
                                if tls.write_all(&bytes).and_then(|()| tls.flush()).is_err() {
                                    return;
                                }
                            }
                            Step::Stall(d) => std::thread::sleep(d),
                            Step::CloseNotify => {
                                tls.conn.send_close_notify();
                                let _ = tls.flush();
                            }
                        }
                    }
                });
            }
        });
        ScriptedServer {
            port,
            ca_pem,
            scripts: tx,
            seen: Mutex::new(seen_rx),
        }
    }

    /// The next connection gets `script`.
    pub fn queue(&self, script: Vec<Step>) {
        self.scripts.send(script).unwrap();
    }

    /// The next request the server read (waits up to 10 s for it).
    pub fn seen(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("a request reached the server")
    }
}

/// Reads a request's head and, by its Content-Length, its body.
fn read_request(tls: &mut impl Read) -> Option<Seen> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tls.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
        if head.len() > 64 << 10 {
            return None;
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target, String::new()),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length.min(1 << 20)];
    tls.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        path,
        query,
        headers,
        body,
    })
}
