//! The Kubernetes client (src/cni/kube.rs) against in-process fake API servers (no root), one
//! trial per case:
//!
//! - pod: the CNI plugin's read, one trial per failure class, each mapped to the CNI code that
//!   tells the runtime what to do: a certificate the kubeconfig's CA does not verify, and
//!   credentials refused (401/403), are configuration errors naming the kubeconfig and the
//!   server (7); a refused connection or a server that never answers is "try again later"
//!   (11); an unknown pod is 100; and a fuzz trial: thousands of mutated responses (bad chunk
//!   sizes, huge or lying lengths, truncated bodies, broken status lines and headers, wrong
//!   JSON types, flipped bytes) go through the response reader and the pod decoding; none may
//!   panic, and each ends as a pod or as a CNI error with one of those codes;
//! - namespace: the GET and its 404;
//! - patch: the pods/status merge patch as istio-cni sends it (method, path, content type,
//!   body) and its 404, 409, 422 and 403; the repair's label patch (labels and the uid);
//! - delete: a pod's DELETE with its uid and version as preconditions, as istio-cni's repair
//!   sends it, and its 409, 404 and 403;
//! - list: pods with percent-encoded selectors, namespaces, and the resource version;
//! - watch: the query, events in order, bookmarks, 410 as an ERROR event or an HTTP status,
//!   the stream's clean end, a dropped connection, an over-long line, a stalled server, a
//!   stream longer than the request timeout, undecodable objects, other ERROR events, a
//!   caller that stops, namespaces, refused credentials;
//! - fuzz: mutated watch streams (flipped bytes, truncation, wrong JSON types, bad chunk
//!   sizes, odd lines, huge lines, answer codes, and valid re-chunkings that must give the
//!   same events) never panic and end as a `WatchEnd` or a `KubeError`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]
#![cfg(feature = "kubernetes")]

#[path = "support/apiserver.rs"]
mod apiserver;
mod support;

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use apiserver::{ScriptedServer, Step};
use meshtables::cni::kube::{KubeError, PatchError, WatchEnd, WatchEvent};
use meshtables::cni::{self, CniError, kube, pod};
use meshtables::flags::Flags;
use meshtables::values::{NamespaceName, PodName};
use serde_json::{Value, json};
use support::rng::Rng;
use support::trials::{NOTHING, Trials};

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mt-kube-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// One attempt (no retry waits) to read `shop/cart` with the kubeconfig at `path`.
fn fetch(path: &std::path::Path) -> Result<pod::Pod, CniError> {
    let client = kube::Client::from_kubeconfig(path)
        .map_err(|e| CniError::new(7, "invalid kubeconfig", e.to_string()))?;
    let ns = meshtables::values::NamespaceName::parse("shop").unwrap();
    let name = meshtables::values::PodName::parse("cart").unwrap();
    cni::fetch_pod(&client, &ns, &name, &[])
}

fn injected_pod() -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "cart", "namespace": "shop",
            "labels": {"app": "cart"},
            "annotations": {"sidecar.istio.io/status": "{}",
                "traffic.sidecar.istio.io/includeInboundPorts": "8080"}},
        "spec": {
            "initContainers": [{"name": "istio-validation"}],
            "containers": [
                {"name": "cart", "image": "cart:1"},
                {"name": "istio-proxy", "args": ["proxy", "sidecar"],
                 "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"},
                         {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                 "securityContext": {"runAsUser": 1337, "runAsGroup": 1337}}
            ]
        },
        "status": {"phase": "Pending"}
    })
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\n{headers}\r\n").into_bytes();
    r.extend_from_slice(body);
    r
}

fn chunked(body: &[u8]) -> Vec<u8> {
    let mut b = format!("{:x}\r\n", body.len()).into_bytes();
    b.extend_from_slice(body);
    b.extend_from_slice(b"\r\n0\r\n\r\n");
    response(
        "200 OK",
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        &b,
    )
}

fn a_well_formed_answer_is_a_pod() {
    let server = apiserver::RawServer::start();
    let kc = apiserver::kubeconfig_for(&dir("ok"), "kc", server.port, &server.ca_pem);
    server.queue(chunked(injected_pod().to_string().as_bytes()), true);
    let pod = fetch(&kc).expect("a pod");
    let mut flags = Flags::default();
    assert!(matches!(
        pod::evaluate(&pod, &mut flags),
        pod::Verdict::Intercept { .. }
    ));
    assert_eq!(
        flags.get(&meshtables::profile::istio::flags::INBOUND_PORTS.spec),
        Some("8080")
    );
    // A server that closes without TLS close_notify, body framed by Content-Length.
    let body = injected_pod().to_string();
    server.queue(
        response(
            "200 OK",
            &format!("Content-Length: {}\r\n", body.len()),
            body.as_bytes(),
        ),
        false,
    );
    fetch(&kc).expect("a pod, without close_notify");
}

fn a_certificate_the_ca_does_not_verify_is_a_configuration_error() {
    let server = apiserver::RawServer::start();
    let (_, other_ca) = apiserver::tls_server();
    let kc = apiserver::kubeconfig_for(&dir("ca"), "kc", server.port, &other_ca);
    server.queue(chunked(b"{}"), true);
    let e = fetch(&kc).unwrap_err();
    assert_eq!(e.code, 7, "{e:?}");
    assert!(e.details.contains(&kc.display().to_string()), "{e:?}");
    assert!(
        e.details
            .contains(&format!("https://127.0.0.1:{}", server.port)),
        "{e:?}"
    );
    assert!(e.details.contains("certificate"), "{e:?}");
}

fn refused_credentials_are_a_configuration_error() {
    let server = apiserver::RawServer::start();
    let kc = apiserver::kubeconfig_for(&dir("auth"), "kc", server.port, &server.ca_pem);
    for status in ["401 Unauthorized", "403 Forbidden"] {
        let body = br#"{"kind":"Status","message":"pods \"cart\" is forbidden"}"#;
        server.queue(
            response(status, &format!("Content-Length: {}\r\n", body.len()), body),
            true,
        );
        let e = fetch(&kc).unwrap_err();
        assert_eq!(e.code, 7, "{status}: {e:?}");
        assert!(e.details.contains(&kc.display().to_string()), "{e:?}");
        assert!(
            e.details.contains("forbidden"),
            "the server's message: {e:?}"
        );
    }
}

fn a_refused_connection_is_try_again_later() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (_, ca) = apiserver::tls_server();
    let kc = apiserver::kubeconfig_for(&dir("refused"), "kc", port, &ca);
    let e = fetch(&kc).unwrap_err();
    assert_eq!(e.code, 11, "{e:?}");
}

fn a_server_that_never_answers_is_try_again_later() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts, then says nothing: no TLS handshake ever completes.
    let _held = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(std::time::Duration::from_secs(20));
        drop(conns);
    });
    let (_, ca) = apiserver::tls_server();
    let kc = apiserver::kubeconfig_for(&dir("silent"), "kc", port, &ca);
    let start = std::time::Instant::now();
    let e = fetch(&kc).unwrap_err();
    assert_eq!(e.code, 11, "{e:?}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "bounded by the request timeout"
    );
}

fn an_unknown_pod_is_not_found() {
    let server = apiserver::RawServer::start();
    let kc = apiserver::kubeconfig_for(&dir("404"), "kc", server.port, &server.ca_pem);
    let body = br#"{"kind":"Status","message":"pods \"cart\" not found"}"#;
    server.queue(
        response(
            "404 Not Found",
            &format!("Content-Length: {}\r\n", body.len()),
            body,
        ),
        true,
    );
    assert_eq!(fetch(&kc).unwrap_err().code, 100);
}

/// Replaces a random value somewhere in `v` (at most `depth` levels down) by a value of
/// another JSON type.
fn retype(v: &mut Value, rng: &mut Rng, depth: usize) {
    if depth > 0 && rng.below(4) != 0 {
        match v {
            Value::Object(map) if !map.is_empty() => {
                let keys: Vec<String> = map.keys().cloned().collect();
                let k = rng.pick(&keys).clone();
                if let Some(child) = map.get_mut(&k) {
                    return retype(child, rng, depth - 1);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                let i = rng.below(items.len());
                return retype(&mut items[i], rng, depth - 1);
            }
            _ => {}
        }
    }
    let odd = [
        json!(null),
        json!(7),
        json!(-1),
        json!(1.5e300),
        json!("x"),
        json!([]),
        json!([1, "a"]),
        json!({}),
        json!({"a": {"b": [null]}}),
        json!(true),
        json!(u64::MAX),
    ];
    *v = rng.pick(&odd).clone();
}

/// One mutated response, built from an injected pod's answer.
fn mutate(rng: &mut Rng) -> (Vec<u8>, bool, &'static str) {
    let mut pod = injected_pod();
    let body = pod.to_string().into_bytes();
    let close_notify = rng.below(2) == 0;
    // Kinds 0-7 alike; the 20 MB "too large" answer (8) one case in 100.
    let kind = if rng.below(100) == 0 { 8 } else { rng.below(8) };
    let raw = match kind {
        // Chunk-size lines that overflow, are not hex, are negative, or lie.
        0 => {
            let size = rng
                .pick(&[
                    "ffffffffffffffffffff",
                    "fffffffffffffff0",
                    "7fffffffffffffff",
                    "zz",
                    "-1",
                    "",
                    " 5",
                    "5;ext=1",
                    "0x10",
                    "18446744073709551616",
                    "1\r\n1",
                ])
                .to_string();
            let mut b = format!("{size}\r\n").into_bytes();
            b.extend_from_slice(&body[..rng.below(body.len())]);
            b.extend_from_slice(b"\r\n0\r\n\r\n");
            response("200 OK", "Transfer-Encoding: chunked\r\n", &b)
        }
        // Content-Length: huge, negative, not a number, longer than the body, conflicting.
        1 => {
            let cl = rng
                .pick(&[
                    "99999999999999999999",
                    "18446744073709551615",
                    "-5",
                    "abc",
                    "",
                    "1e9",
                ])
                .to_string();
            let headers = match rng.below(3) {
                0 => format!("Content-Length: {cl}\r\n"),
                1 => format!(
                    "Content-Length: {}\r\nContent-Length: {}\r\n",
                    body.len(),
                    body.len() + 7
                ),
                _ => format!(
                    "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
                    body.len() + rng.below(100)
                ),
            };
            response("200 OK", &headers, &body)
        }
        // Truncated anywhere: in the status line, the headers, the body, a chunk.
        2 => {
            let whole = if rng.below(2) == 0 {
                chunked(&body)
            } else {
                response(
                    "200 OK",
                    &format!("Content-Length: {}\r\n", body.len()),
                    &body,
                )
            };
            whole[..rng.below(whole.len())].to_vec()
        }
        // Wrong JSON types anywhere in the pod.
        3 => {
            for _ in 0..=rng.below(3) {
                retype(&mut pod, rng, 8);
            }
            chunked(pod.to_string().as_bytes())
        }
        // Flipped bytes anywhere in the response.
        4 => {
            let mut whole = chunked(&body);
            for _ in 0..=rng.below(8) {
                let i = rng.below(whole.len());
                whole[i] = (rng.next() & 0xff) as u8;
            }
            whole
        }
        // Broken status lines.
        5 => {
            let status = rng.pick(&[
                "HTTP/1.1 abc OK",
                "HTTP/9.9 200 OK",
                "HTTP/1.1 999 Weird",
                "HTTP/1.1 100 Continue",
                "HTTP/1.1 200",
                "200 OK",
                "HTTP/1.1  200  OK",
                "",
                "HTTP/1.1 302 Found\r\nLocation: https://127.0.0.1:1/",
            ]);
            let mut r = format!("{status}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(&body);
            r
        }
        // Enormous or malformed headers.
        6 => {
            let headers = match rng.below(3) {
                0 => format!("X-Big: {}\r\n", "a".repeat(200_000)),
                1 => "no colon here\r\n".to_string(),
                _ => format!("X-Many: 1\r\n{}", "X-A: b\r\n".repeat(5000)),
            };
            response("200 OK", &headers, &body)
        }
        // A body that is not JSON, or JSON that is not an object.
        7 => {
            let bodies: [&[u8]; 7] = [
                b"not json",
                b"[1,2,3]",
                b"\"a pod\"",
                b"{\"metadata\":",
                b"\xff\xfe\x00",
                b"",
                b"null",
            ];
            let b: &[u8] = bodies[rng.below(bodies.len())];
            chunked(b)
        }
        // An endless chunked body: far more than the 16 MiB limit.
        _ => {
            let mut b = Vec::new();
            let chunk = vec![b' '; 1 << 16];
            for _ in 0..300 {
                b.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                b.extend_from_slice(&chunk);
                b.extend_from_slice(b"\r\n");
            }
            response("200 OK", "Transfer-Encoding: chunked\r\n", &b)
        }
    };
    let name = [
        "chunk size",
        "content length",
        "truncated",
        "json types",
        "flipped bytes",
        "status line",
        "headers",
        "not a pod",
        "too large",
    ][kind];
    (raw, close_notify, name)
}

fn fuzz_responses_never_panic_and_end_as_a_pod_or_a_cni_error() {
    const CASES: usize = 2400;
    let server = apiserver::RawServer::start();
    let kc = apiserver::kubeconfig_for(&dir("fuzz"), "kc", server.port, &server.ca_pem);
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    for case in 0..CASES {
        let (raw, close_notify, kind) = mutate(&mut rng);
        server.queue(raw, close_notify);
        let outcome = std::panic::catch_unwind(|| match fetch(&kc) {
            Ok(pod) => {
                // Whatever decoded is a pod Istio's semantics can judge.
                let _ = pod::evaluate(&pod, &mut Flags::default());
                "pod".to_string()
            }
            Err(e) => {
                assert!(
                    [7, 11, 100].contains(&e.code),
                    "case {case} ({kind}): unexpected code {e:?}"
                );
                assert!(
                    !e.msg.is_empty() && !e.details.is_empty(),
                    "case {case}: {e:?}"
                );
                format!("code {}", e.code)
            }
        });
        let outcome = outcome.unwrap_or_else(|_| panic!("case {case} ({kind}) panicked"));
        *outcomes.entry(format!("{kind}: {outcome}")).or_default() += 1;
    }
    println!("{CASES} mutated responses, no panic; outcomes:");
    for (k, n) in &outcomes {
        println!("  {k}: {n}");
    }
    assert!(
        outcomes.keys().filter(|k| k.ends_with("code 11")).count() >= 5,
        "the mutations reach the error paths: {outcomes:?}"
    );
}

// ---- the node agent's requests, against ScriptedServer ----

fn client(server: &ScriptedServer, tag: &str) -> kube::Client {
    let kc = apiserver::kubeconfig_for(&dir(tag), "kc", server.port, &server.ca_pem);
    kube::Client::from_kubeconfig(&kc).unwrap()
}

fn shop() -> NamespaceName {
    NamespaceName::parse("shop").unwrap()
}

fn cart() -> PodName {
    PodName::parse("cart").unwrap()
}

/// An answer framed by Content-Length, then a clean close.
fn answer(status: &str, body: &str) -> Vec<Step> {
    vec![
        Step::Send(response(
            status,
            &format!(
                "Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
                body.len()
            ),
            body.as_bytes(),
        )),
        Step::CloseNotify,
    ]
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "code": code, "reason": reason, "message": message})
    .to_string()
}

fn pod_json(name: &str, rv: &str) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                     "resourceVersion": rv,
                     "labels": {"istio.io/dataplane-mode": "ambient"}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "default",
                 "containers": [{"name": "app"}]},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.244.1.7"}]}})
}

fn event(kind: &str, object: Value) -> String {
    format!("{}\n", json!({"type": kind, "object": object}))
}

fn bookmark(rv: &str) -> String {
    event(
        "BOOKMARK",
        json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": rv}}),
    )
}

/// `Connection: close` on every scripted answer: the scripted server answers one request per
/// connection, so the client must not keep it for the next.
const WATCH_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunk(bytes: &[u8]) -> Vec<u8> {
    let mut b = format!("{:x}\r\n", bytes.len()).into_bytes();
    b.extend_from_slice(bytes);
    b.extend_from_slice(b"\r\n");
    b
}

/// A watch answer: the head, each line as a chunk of its own, the last chunk, a clean close.
fn stream(lines: &[String]) -> Vec<Step> {
    let mut steps = vec![Step::Send(WATCH_HEAD.as_bytes().to_vec())];
    for l in lines {
        steps.push(Step::Send(chunk(l.as_bytes())));
    }
    steps.push(Step::Send(b"0\r\n\r\n".to_vec()));
    steps.push(Step::CloseNotify);
    steps
}

/// (type, name, resourceVersion) of each event.
type Seen = Vec<(&'static str, String, String)>;

fn describe(e: WatchEvent<pod::Pod>) -> (&'static str, String, String) {
    let (kind, p) = match e {
        WatchEvent::Added(p) => ("ADDED", p),
        WatchEvent::Modified(p) => ("MODIFIED", p),
        WatchEvent::Deleted(p) => ("DELETED", p),
    };
    (kind, p.metadata.name, p.metadata.resource_version)
}

/// Watches this node's pods from "10" with `timeout` seconds, collecting the events.
fn watch(client: &kube::Client, timeout: u32) -> (Seen, Result<WatchEnd, KubeError>) {
    let mut seen = Vec::new();
    let end = client.watch_pods("spec.nodeName=node-1", "10", timeout, &mut |e| {
        seen.push(describe(e));
        ControlFlow::Continue(())
    });
    (seen, end)
}

fn closed(rv: &str) -> WatchEnd {
    WatchEnd::Closed {
        resource_version: rv.into(),
    }
}

fn namespace_get() {
    let server = ScriptedServer::start();
    let c = client(&server, "ns-get");
    let body = json!({"kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": "shop", "uid": "ns-uid", "resourceVersion": "7",
                     "labels": {"istio.io/dataplane-mode": "ambient"}}});
    server.queue(answer("200 OK", &body.to_string()));
    let ns = c.namespace(&shop()).unwrap();
    let req = server.seen();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/api/v1/namespaces/shop")
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {}", apiserver::TOKEN).as_str())
    );
    assert_eq!(ns.metadata.name, "shop");
    assert_eq!(ns.metadata.resource_version, "7");
    assert_eq!(
        ns.metadata
            .labels
            .get("istio.io/dataplane-mode")
            .map(String::as_str),
        Some("ambient")
    );
}

fn namespace_unknown_is_not_found() {
    let server = ScriptedServer::start();
    let c = client(&server, "ns-404");
    server.queue(answer(
        "404 Not Found",
        &status_body(404, "NotFound", "namespaces \"shop\" not found"),
    ));
    match c.namespace(&shop()) {
        Err(KubeError::NotFound(what)) => assert_eq!(what, "namespace shop"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn enabled_patch() -> Value {
    json!({"metadata": {"annotations": {"ambient.istio.io/redirection": "enabled"}}})
}

fn patch_sends_a_merge_patch_to_the_status_subresource() {
    let server = ScriptedServer::start();
    let c = client(&server, "patch-ok");
    server.queue(answer("200 OK", &pod_json("cart", "12").to_string()));
    c.patch_pod_status(&shop(), &cart(), &enabled_patch())
        .unwrap();
    let req = server.seen();
    assert_eq!(req.method, "PATCH");
    assert_eq!(req.path, "/api/v1/namespaces/shop/pods/cart/status");
    assert_eq!(req.query, "");
    // istio-cni's AnnotateEnrolledPod: types.MergePatchType on the "status" subresource.
    assert_eq!(
        req.header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&req.body).unwrap(),
        enabled_patch()
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {}", apiserver::TOKEN).as_str())
    );
}

fn patch_answered(status: &str, code: u16, reason: &str) -> Result<(), PatchError> {
    let server = ScriptedServer::start();
    let c = client(&server, &format!("patch-{code}"));
    server.queue(answer(
        status,
        &status_body(code, reason, &format!("server says {reason}")),
    ));
    c.patch_pod_status(&shop(), &cart(), &enabled_patch())
}

fn patch_missing_pod_is_not_found() {
    match patch_answered("404 Not Found", 404, "NotFound") {
        Err(PatchError::Kube(KubeError::NotFound(what))) => assert_eq!(what, "pod shop/cart"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn patch_conflict_is_refused() {
    match patch_answered("409 Conflict", 409, "Conflict") {
        Err(e @ PatchError::Refused { status: 409, .. }) => {
            assert!(e.to_string().contains("server says Conflict"), "{e}");
            assert!(e.to_string().contains("shop/cart"), "{e}");
        }
        other => panic!("expected Refused 409, got {other:?}"),
    }
}

fn patch_unprocessable_is_refused() {
    match patch_answered("422 Unprocessable Entity", 422, "Invalid") {
        Err(PatchError::Refused { status: 422, .. }) => {}
        other => panic!("expected Refused 422, got {other:?}"),
    }
}

fn patch_forbidden_is_rejected() {
    match patch_answered("403 Forbidden", 403, "Forbidden") {
        Err(PatchError::Kube(e @ KubeError::Rejected { .. })) => {
            let text = e.to_string();
            assert!(text.contains("patch pods/status"), "{text}");
            assert!(text.contains("server says Forbidden"), "{text}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn label_sends_a_merge_patch_of_the_labels_and_the_uid() {
    let server = ScriptedServer::start();
    let c = client(&server, "label-ok");
    server.queue(answer("200 OK", &pod_json("cart", "12").to_string()));
    let key = meshtables::values::LabelKey::parse("cni.istio.io/uninitialized").unwrap();
    let value = meshtables::values::LabelValue::parse("true").unwrap();
    c.label_pod(&shop(), &cart(), "uid-cart", &key, &value)
        .unwrap();
    let req = server.seen();
    assert_eq!(req.method, "PATCH");
    // istio-cni's labelBrokenPod: types.MergePatchType on the "status" subresource.
    assert_eq!(req.path, "/api/v1/namespaces/shop/pods/cart/status");
    assert_eq!(
        req.header("content-type"),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&req.body).unwrap(),
        json!({"metadata": {"uid": "uid-cart",
            "labels": {"cni.istio.io/uninitialized": "true"}}})
    );
}

fn delete_sends_the_uid_and_version_as_preconditions() {
    let server = ScriptedServer::start();
    let c = client(&server, "delete-ok");
    server.queue(answer("200 OK", &pod_json("cart", "13").to_string()));
    c.delete_pod(&shop(), &cart(), "uid-cart", "12").unwrap();
    let req = server.seen();
    assert_eq!(req.method, "DELETE");
    assert_eq!(req.path, "/api/v1/namespaces/shop/pods/cart");
    assert_eq!(req.query, "");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        serde_json::from_slice::<Value>(&req.body).unwrap(),
        json!({"kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"uid": "uid-cart", "resourceVersion": "12"}})
    );
    assert_eq!(
        req.header("authorization"),
        Some(format!("Bearer {}", apiserver::TOKEN).as_str())
    );
}

fn delete_answered(status: &str, code: u16, reason: &str) -> Result<(), PatchError> {
    let server = ScriptedServer::start();
    let c = client(&server, &format!("delete-{code}"));
    server.queue(answer(
        status,
        &status_body(code, reason, &format!("server says {reason}")),
    ));
    c.delete_pod(&shop(), &cart(), "uid-cart", "12")
}

fn delete_precondition_failed_is_refused() {
    match delete_answered("409 Conflict", 409, "Conflict") {
        Err(e @ PatchError::Refused { status: 409, .. }) => {
            let text = e.to_string();
            assert!(text.contains("deleting pod shop/cart"), "{text}");
            assert!(text.contains("server says Conflict"), "{text}");
        }
        other => panic!("expected Refused 409, got {other:?}"),
    }
}

fn delete_missing_pod_is_not_found() {
    match delete_answered("404 Not Found", 404, "NotFound") {
        Err(PatchError::Kube(KubeError::NotFound(what))) => assert_eq!(what, "pod shop/cart"),
        other => panic!("expected NotFound, got {other:?}"),
    }
}

fn delete_forbidden_names_the_verb() {
    match delete_answered("403 Forbidden", 403, "Forbidden") {
        Err(PatchError::Kube(e @ KubeError::Rejected { .. })) => {
            let text = e.to_string();
            assert!(text.contains("delete pods"), "{text}");
            assert!(text.contains("server says Forbidden"), "{text}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

fn pod_list(rv: &str) -> String {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
           "items": [pod_json("a", "5"), pod_json("b", "6")]})
    .to_string()
}

fn list_pods_encodes_selectors_and_returns_the_version() {
    let server = ScriptedServer::start();
    let c = client(&server, "list-pods");
    server.queue(answer("200 OK", &pod_list("12345")));
    // A label selector carrying every character that could end or add a parameter.
    let labels = "istio.io/dataplane-mode in (ambient),x!=y&fieldSelector=z#f+%";
    let (pods, rv) = c.list_pods("spec.nodeName=node-1", Some(labels)).unwrap();
    let req = server.seen();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/api/v1/pods")
    );
    assert_eq!(
        req.query_pairs(),
        vec![
            (
                "fieldSelector".to_string(),
                "spec.nodeName=node-1".to_string()
            ),
            ("labelSelector".to_string(), labels.to_string()),
        ]
    );
    assert_eq!(
        req.query.matches('&').count(),
        1,
        "raw query {:?}",
        req.query
    );
    assert!(
        !req.query.contains('#') && !req.query.contains(' '),
        "{:?}",
        req.query
    );
    assert_eq!(rv, "12345");
    let names: Vec<&str> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(pods[0].spec.node_name, "node-1");
}

fn list_namespaces_returns_items_and_the_version() {
    let server = ScriptedServer::start();
    let c = client(&server, "list-ns");
    let body = json!({"kind": "NamespaceList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "99"},
        "items": [{"metadata": {"name": "shop", "resourceVersion": "3"}},
                  {"metadata": {"name": "kube-system", "resourceVersion": "4"}}]});
    server.queue(answer("200 OK", &body.to_string()));
    let (namespaces, rv) = c.list_namespaces().unwrap();
    let req = server.seen();
    assert_eq!(
        (req.method.as_str(), req.path.as_str(), req.query.as_str()),
        ("GET", "/api/v1/namespaces", "")
    );
    assert_eq!(rv, "99");
    let names: Vec<&str> = namespaces
        .iter()
        .map(|n| n.metadata.name.as_str())
        .collect();
    assert_eq!(names, ["shop", "kube-system"]);
}

fn list_without_a_resource_version_is_an_error() {
    let server = ScriptedServer::start();
    let c = client(&server, "list-norv");
    server.queue(answer(
        "200 OK",
        &json!({"kind": "PodList", "items": []}).to_string(),
    ));
    match c.list_pods("spec.nodeName=node-1", None) {
        Err(e @ KubeError::Unavailable { .. }) => {
            assert!(e.to_string().contains("resourceVersion"), "{e}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn watch_asks_for_bookmarks_from_the_version() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-query");
    server.queue(stream(&[]));
    let (seen, end) = watch(&c, 240);
    assert!(seen.is_empty());
    assert_eq!(end.unwrap(), closed("10"));
    let req = server.seen();
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/api/v1/pods")
    );
    let mut pairs = req.query_pairs();
    pairs.sort();
    let want = [
        ("allowWatchBookmarks", "true"),
        ("fieldSelector", "spec.nodeName=node-1"),
        ("resourceVersion", "10"),
        ("timeoutSeconds", "240"),
        ("watch", "1"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(pairs, want);
}

fn watch_events_arrive_in_order() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-order");
    server.queue(stream(&[
        event("ADDED", pod_json("a", "11")),
        event("MODIFIED", pod_json("a", "12")),
        event("ADDED", pod_json("b", "13")),
        event("DELETED", pod_json("a", "14")),
    ]));
    let (seen, end) = watch(&c, 60);
    let want: Seen = vec![
        ("ADDED", "a".into(), "11".into()),
        ("MODIFIED", "a".into(), "12".into()),
        ("ADDED", "b".into(), "13".into()),
        ("DELETED", "a".into(), "14".into()),
    ];
    assert_eq!(seen, want);
    assert_eq!(end.unwrap(), closed("14"));
}

fn watch_bookmark_moves_the_version_without_an_event() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-bookmark");
    server.queue(stream(&[
        event("ADDED", pod_json("a", "11")),
        bookmark("20"),
    ]));
    let (seen, end) = watch(&c, 60);
    assert_eq!(seen, vec![("ADDED", "a".to_string(), "11".to_string())]);
    assert_eq!(end.unwrap(), closed("20"));
}

fn watch_gone_error_event_is_expired() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-410");
    let gone = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": "too old resource version: 10 (2000)", "reason": "Expired", "code": 410});
    server.queue(stream(&[
        event("ADDED", pod_json("a", "11")),
        event("ERROR", gone),
        event("ADDED", pod_json("b", "12")),
    ]));
    let (seen, end) = watch(&c, 60);
    assert_eq!(seen, vec![("ADDED", "a".to_string(), "11".to_string())]);
    assert_eq!(end.unwrap(), WatchEnd::Expired);
}

fn watch_http_410_is_expired() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-http410");
    server.queue(answer(
        "410 Gone",
        &status_body(410, "Expired", "too old resource version"),
    ));
    let (seen, end) = watch(&c, 60);
    assert!(seen.is_empty());
    assert_eq!(end.unwrap(), WatchEnd::Expired);
}

fn watch_closed_stream_gives_the_last_version() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-closed");
    // Events cut anywhere by the chunking: one split across three chunks, two in one.
    let a = event("ADDED", pod_json("a", "11"));
    let b = event("MODIFIED", pod_json("a", "12"));
    let d = event("ADDED", pod_json("b", "13"));
    let bytes = format!("{a}{b}{d}").into_bytes();
    let (x, y) = (a.len() / 3, a.len() / 3 * 2);
    let mut steps = vec![Step::Send(WATCH_HEAD.as_bytes().to_vec())];
    for piece in [&bytes[..x], &bytes[x..y], &bytes[y..]] {
        steps.push(Step::Send(chunk(piece)));
    }
    steps.push(Step::Send(b"0\r\n\r\n".to_vec()));
    steps.push(Step::CloseNotify);
    server.queue(steps);
    let (seen, end) = watch(&c, 60);
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(end.unwrap(), closed("13"));
}

fn watch_dropped_connection_is_broken_with_the_last_version() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-dropped");
    let half = event("ADDED", pod_json("b", "13"));
    // An event, a bookmark, half an event, then the connection goes (no last chunk).
    server.queue(vec![
        Step::Send(WATCH_HEAD.as_bytes().to_vec()),
        Step::Send(chunk(event("ADDED", pod_json("a", "11")).as_bytes())),
        Step::Send(chunk(bookmark("12").as_bytes())),
        Step::Send(chunk(&half.as_bytes()[..half.len() / 2])),
    ]);
    let (seen, end) = watch(&c, 60);
    assert_eq!(seen, vec![("ADDED", "a".to_string(), "11".to_string())]);
    match end.unwrap() {
        WatchEnd::Broken {
            resource_version, ..
        } => assert_eq!(resource_version, "12"),
        other => panic!("expected Broken, got {other:?}"),
    }
}

fn watch_over_long_line_is_an_error() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-long");
    let huge = vec![b'x'; kube::MAX_EVENT + (1 << 20)];
    let mut steps = vec![
        Step::Send(WATCH_HEAD.as_bytes().to_vec()),
        Step::Send(chunk(event("ADDED", pod_json("a", "11")).as_bytes())),
    ];
    for piece in huge.chunks(1 << 16) {
        steps.push(Step::Send(chunk(piece)));
    }
    steps.push(Step::Send(chunk(b"\n")));
    steps.push(Step::Send(b"0\r\n\r\n".to_vec()));
    server.queue(steps);
    let (seen, end) = watch(&c, 60);
    assert_eq!(seen.len(), 1);
    match end {
        Err(e @ KubeError::Unavailable { .. }) => {
            assert!(
                e.to_string()
                    .contains(&format!("longer than {}", kube::MAX_EVENT)),
                "{e}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

fn watch_stalled_server_returns_within_the_read_timeout() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-stall");
    server.queue(vec![
        Step::Send(WATCH_HEAD.as_bytes().to_vec()),
        Step::Send(chunk(event("ADDED", pod_json("a", "11")).as_bytes())),
        Step::Stall(Duration::from_secs(60)),
    ]);
    let start = Instant::now();
    let (seen, end) = watch(&c, 1);
    let took = start.elapsed();
    assert_eq!(seen.len(), 1);
    assert!(
        matches!(&end, Ok(WatchEnd::Broken { resource_version, .. }) if resource_version == "11"),
        "{end:?}"
    );
    // The read timeout is timeoutSeconds + LINE_SLACK: not sooner (an idle watch is normal
    // until the server's own timeout), and not much later.
    let limit = Duration::from_secs(1) + kube::LINE_SLACK;
    assert!(
        took >= limit - Duration::from_millis(200),
        "returned after {took:?}"
    );
    assert!(
        took < limit + Duration::from_secs(3),
        "returned after {took:?}"
    );
}

fn watch_outlives_the_request_timeout() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-long-lived");
    // 6 s of stream, longer than the 5 s bound on a whole request.
    server.queue(vec![
        Step::Send(WATCH_HEAD.as_bytes().to_vec()),
        Step::Send(chunk(event("ADDED", pod_json("a", "11")).as_bytes())),
        Step::Stall(Duration::from_secs(3)),
        Step::Send(chunk(event("MODIFIED", pod_json("a", "12")).as_bytes())),
        Step::Stall(Duration::from_secs(3)),
        Step::Send(chunk(event("DELETED", pod_json("a", "13")).as_bytes())),
        Step::Send(b"0\r\n\r\n".to_vec()),
        Step::CloseNotify,
    ]);
    let start = Instant::now();
    let (seen, end) = watch(&c, 60);
    assert!(start.elapsed() >= Duration::from_secs(6));
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(end.unwrap(), closed("13"));
}

fn watch_undecodable_object_ends_with_an_error() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-shape");
    let mut bad = pod_json("b", "12");
    bad["metadata"]["labels"] = json!(7);
    server.queue(stream(&[
        event("ADDED", pod_json("a", "11")),
        event("MODIFIED", bad),
        event("ADDED", pod_json("c", "13")),
    ]));
    let (seen, end) = watch(&c, 60);
    // Not skipped: the change it carried would be missed; the caller lists again.
    assert_eq!(seen.len(), 1, "{seen:?}");
    match end {
        Err(e @ KubeError::Unavailable { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("event 2") && text.contains("not a pod"),
                "{text}"
            )
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

fn watch_other_error_event_is_an_error() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-500");
    let internal = json!({"kind": "Status", "code": 500, "reason": "InternalError",
                          "message": "etcd is sad"});
    server.queue(stream(&[event("ERROR", internal)]));
    match watch(&c, 60).1 {
        Err(e @ KubeError::Unavailable { .. }) => {
            assert!(e.to_string().contains("etcd is sad"), "{e}")
        }
        other => panic!("expected an error, got {other:?}"),
    }
}

fn watch_caller_can_stop() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-stop");
    server.queue(stream(&[
        event("ADDED", pod_json("a", "11")),
        event("ADDED", pod_json("b", "12")),
    ]));
    let mut n = 0;
    let end = c
        .watch_pods("spec.nodeName=node-1", "10", 60, &mut |_| {
            n += 1;
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        end,
        WatchEnd::Stopped {
            resource_version: "11".into()
        }
    );
}

fn watch_namespaces() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-ns");
    let ns = json!({"kind": "Namespace", "metadata": {"name": "shop", "resourceVersion": "31",
                    "labels": {"istio.io/dataplane-mode": "ambient"}}});
    server.queue(stream(&[event("MODIFIED", ns), bookmark("40")]));
    let mut seen = Vec::new();
    let end = c
        .watch_namespaces("30", 60, &mut |e| {
            if let WatchEvent::Modified(n) = e {
                seen.push(n.metadata.labels.get("istio.io/dataplane-mode").cloned());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, vec![Some("ambient".to_string())]);
    assert_eq!(end, closed("40"));
    let req = server.seen();
    assert_eq!(req.path, "/api/v1/namespaces");
    assert!(
        req.query_pairs()
            .contains(&("resourceVersion".into(), "30".into()))
    );
    assert!(!req.query_pairs().iter().any(|(k, _)| k == "fieldSelector"));
}

fn watch_forbidden_is_rejected() {
    let server = ScriptedServer::start();
    let c = client(&server, "watch-403");
    server.queue(answer(
        "403 Forbidden",
        &status_body(403, "Forbidden", "pods is forbidden: cannot watch"),
    ));
    match watch(&c, 60).1 {
        Err(e @ KubeError::Rejected { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("watch pods") && text.contains("cannot watch"),
                "{text}"
            )
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
}

/// The events of the fuzz's base stream: (line, resource version it leaves).
fn base_events() -> Vec<(Value, &'static str)> {
    vec![
        (
            json!({"type": "ADDED", "object": pod_json("a", "11")}),
            "11",
        ),
        (
            json!({"type": "MODIFIED", "object": pod_json("a", "12")}),
            "12",
        ),
        (
            json!({"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "13"}}}),
            "13",
        ),
        (
            json!({"type": "DELETED", "object": pod_json("a", "14")}),
            "14",
        ),
    ]
}

/// One mutated watch answer; `Some(events)` when the mutation keeps the stream valid (then the
/// watch must see exactly those events and end Closed at "14").
fn mutate_watch(rng: &mut Rng) -> (Vec<Step>, &'static str, bool) {
    let mut events = base_events();
    let lines = |events: &[(Value, &str)]| -> Vec<u8> {
        events
            .iter()
            .flat_map(|(v, _)| format!("{v}\n").into_bytes())
            .collect()
    };
    let framed = |body: &[u8], pieces: usize, rng: &mut Rng| -> Vec<u8> {
        let mut out = WATCH_HEAD.as_bytes().to_vec();
        let mut rest = body;
        while !rest.is_empty() {
            let n = if pieces == 0 {
                rest.len()
            } else {
                1 + rng.below(rest.len().min(pieces))
            };
            out.extend_from_slice(&chunk(&rest[..n]));
            rest = &rest[n..];
        }
        out.extend_from_slice(b"0\r\n\r\n");
        out
    };
    let kind = if rng.below(50) == 0 { 7 } else { rng.below(7) };
    let (raw, valid) = match kind {
        // Valid: the same events cut into random chunks, blank lines between some.
        0 => {
            let mut body = Vec::new();
            for (v, _) in &events {
                body.extend_from_slice(format!("{v}\n").as_bytes());
                if rng.below(3) == 0 {
                    body.extend_from_slice(b"\n");
                }
            }
            (framed(&body, 1 + rng.below(400), rng), true)
        }
        // Flipped bytes anywhere after the head.
        1 => {
            let mut raw = framed(&lines(&events), 0, rng);
            let head = WATCH_HEAD.len();
            for _ in 0..=rng.below(6) {
                let i = head + rng.below(raw.len() - head);
                raw[i] = (rng.next() & 0xff) as u8;
            }
            (raw, false)
        }
        // Truncated anywhere.
        2 => {
            let raw = framed(&lines(&events), 1 + rng.below(200), rng);
            let cut = rng.below(raw.len());
            (raw[..cut].to_vec(), false)
        }
        // Wrong JSON types anywhere in one event.
        3 => {
            let i = rng.below(events.len());
            retype(&mut events[i].0, rng, 6);
            (framed(&lines(&events), 0, rng), false)
        }
        // A bad chunk size before the body.
        4 => {
            let size = rng.pick(&[
                "zz",
                "-1",
                "",
                "ffffffffffffffffffff",
                "7fffffffffffffff",
                "1\r\n1",
            ]);
            let mut raw = WATCH_HEAD.as_bytes().to_vec();
            raw.extend_from_slice(format!("{size}\r\n").as_bytes());
            raw.extend_from_slice(&lines(&events));
            raw.extend_from_slice(b"\r\n0\r\n\r\n");
            (raw, false)
        }
        // Odd lines in the stream: not JSON, an unknown type, no object, an ERROR.
        5 => {
            let odd = rng
                .pick(&[
                    "not json".to_string(),
                    json!({"type": "SYNC", "object": {}}).to_string(),
                    json!({"type": "ADDED"}).to_string(),
                    json!({"object": pod_json("x", "1")}).to_string(),
                    json!({"type": "ERROR", "object": {"code": 410}}).to_string(),
                    json!({"type": "ERROR", "object": "gone"}).to_string(),
                    json!({"type": "BOOKMARK", "object": {"metadata": {}}}).to_string(),
                    "[1,2]".to_string(),
                    "\u{0}\u{1}".to_string(),
                ])
                .clone();
            let mut body = lines(&events[..2]);
            body.extend_from_slice(format!("{odd}\n").as_bytes());
            body.extend_from_slice(&lines(&events[2..]));
            (framed(&body, 1 + rng.below(300), rng), false)
        }
        // Another answer code, with a Status or a stream for a body.
        6 => {
            let status = rng.pick(&[
                "410 Gone",
                "500 Internal Server Error",
                "403 Forbidden",
                "404 Not Found",
                "429 Too Many Requests",
                "200 OK",
            ]);
            let body = status_body(0, "x", "y");
            let raw = response(
                status,
                &format!("Connection: close\r\nContent-Length: {}\r\n", body.len()),
                body.as_bytes(),
            );
            (raw, false)
        }
        // A line beyond the bound, then the rest.
        _ => {
            let mut body = lines(&events[..1]);
            body.extend(std::iter::repeat_n(b'{', kube::MAX_EVENT + 10));
            body.push(b'\n');
            body.extend_from_slice(&lines(&events[1..]));
            (framed(&body, 1 << 16, rng), false)
        }
    };
    let name = [
        "rechunked",
        "flipped bytes",
        "truncated",
        "json types",
        "chunk size",
        "odd lines",
        "answer code",
        "huge line",
    ][kind];
    let mut steps = vec![Step::Send(raw)];
    if rng.below(2) == 0 {
        steps.push(Step::CloseNotify);
    }
    (steps, name, valid)
}

fn fuzz_watch_streams_never_panic() {
    const CASES: usize = 1500;
    let server = ScriptedServer::start();
    let c = client(&server, "watch-fuzz");
    let mut rng = Rng::new(0x5eed_0a7c_4000_0002);
    let mut outcomes: std::collections::BTreeMap<String, usize> = Default::default();
    let versions = ["10", "11", "12", "13", "14"];
    for case in 0..CASES {
        let (steps, kind, valid) = mutate_watch(&mut rng);
        server.queue(steps);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (seen, end) = watch(&c, 30);
            if valid {
                assert_eq!(seen.len(), 3, "case {case} ({kind}): {seen:?} {end:?}");
                assert_eq!(end.as_ref().unwrap(), &closed("14"), "case {case} ({kind})");
            }
            match end {
                Ok(WatchEnd::Closed { resource_version })
                | Ok(WatchEnd::Broken {
                    resource_version, ..
                })
                | Ok(WatchEnd::Stopped { resource_version }) => {
                    // A version the stream carried or the one the watch started from (a
                    // flipped byte may make another).
                    if versions.contains(&resource_version.as_str()) {
                        "version seen"
                    } else {
                        "mutated version"
                    }
                }
                Ok(WatchEnd::Expired) => "expired",
                Err(KubeError::Unavailable { .. }) => "unavailable",
                Err(KubeError::Rejected { .. }) => "rejected",
                Err(KubeError::NotFound(_)) => "not found",
                Err(KubeError::Config { .. }) => "config",
            }
        }));
        let outcome = outcome.unwrap_or_else(|_| panic!("case {case} ({kind}) panicked"));
        *outcomes.entry(format!("{kind}: {outcome}")).or_default() += 1;
    }
    println!("{CASES} mutated watch streams, no panic; outcomes:");
    for (k, n) in &outcomes {
        println!("  {k}: {n}");
    }
    for reached in ["version seen", "expired", "unavailable", "rejected"] {
        assert!(
            outcomes.keys().any(|k| k.ends_with(reached)),
            "the mutations reach {reached}: {outcomes:?}"
        );
    }
}

fn main() {
    let mut t = Trials::new();
    t.add(
        "pod::a_well_formed_answer_is_a_pod",
        NOTHING,
        a_well_formed_answer_is_a_pod,
    );
    t.add(
        "pod::a_certificate_the_ca_does_not_verify_is_a_configuration_error",
        NOTHING,
        a_certificate_the_ca_does_not_verify_is_a_configuration_error,
    );
    t.add(
        "pod::refused_credentials_are_a_configuration_error",
        NOTHING,
        refused_credentials_are_a_configuration_error,
    );
    t.add(
        "pod::a_refused_connection_is_try_again_later",
        NOTHING,
        a_refused_connection_is_try_again_later,
    );
    t.add(
        "pod::a_server_that_never_answers_is_try_again_later",
        NOTHING,
        a_server_that_never_answers_is_try_again_later,
    );
    t.add(
        "pod::an_unknown_pod_is_not_found",
        NOTHING,
        an_unknown_pod_is_not_found,
    );
    t.add(
        "pod::fuzz_responses_never_panic_and_end_as_a_pod_or_a_cni_error",
        NOTHING,
        fuzz_responses_never_panic_and_end_as_a_pod_or_a_cni_error,
    );
    t.add("namespace::get", NOTHING, namespace_get);
    t.add(
        "namespace::unknown_is_not_found",
        NOTHING,
        namespace_unknown_is_not_found,
    );
    t.add(
        "patch::sends_a_merge_patch_to_the_status_subresource",
        NOTHING,
        patch_sends_a_merge_patch_to_the_status_subresource,
    );
    t.add(
        "patch::missing_pod_is_not_found",
        NOTHING,
        patch_missing_pod_is_not_found,
    );
    t.add(
        "patch::conflict_is_refused",
        NOTHING,
        patch_conflict_is_refused,
    );
    t.add(
        "patch::unprocessable_is_refused",
        NOTHING,
        patch_unprocessable_is_refused,
    );
    t.add(
        "patch::forbidden_is_rejected",
        NOTHING,
        patch_forbidden_is_rejected,
    );
    t.add(
        "list::pods_encodes_selectors_and_returns_the_version",
        NOTHING,
        list_pods_encodes_selectors_and_returns_the_version,
    );
    t.add(
        "list::namespaces_returns_items_and_the_version",
        NOTHING,
        list_namespaces_returns_items_and_the_version,
    );
    t.add(
        "list::without_a_resource_version_is_an_error",
        NOTHING,
        list_without_a_resource_version_is_an_error,
    );
    t.add(
        "watch::asks_for_bookmarks_from_the_version",
        NOTHING,
        watch_asks_for_bookmarks_from_the_version,
    );
    t.add(
        "watch::events_arrive_in_order",
        NOTHING,
        watch_events_arrive_in_order,
    );
    t.add(
        "watch::bookmark_moves_the_version_without_an_event",
        NOTHING,
        watch_bookmark_moves_the_version_without_an_event,
    );
    t.add(
        "watch::gone_error_event_is_expired",
        NOTHING,
        watch_gone_error_event_is_expired,
    );
    t.add(
        "watch::http_410_is_expired",
        NOTHING,
        watch_http_410_is_expired,
    );
    t.add(
        "watch::closed_stream_gives_the_last_version",
        NOTHING,
        watch_closed_stream_gives_the_last_version,
    );
    t.add(
        "watch::dropped_connection_is_broken_with_the_last_version",
        NOTHING,
        watch_dropped_connection_is_broken_with_the_last_version,
    );
    t.add(
        "watch::over_long_line_is_an_error",
        NOTHING,
        watch_over_long_line_is_an_error,
    );
    t.add(
        "watch::stalled_server_returns_within_the_read_timeout",
        NOTHING,
        watch_stalled_server_returns_within_the_read_timeout,
    );
    t.add(
        "watch::outlives_the_request_timeout",
        NOTHING,
        watch_outlives_the_request_timeout,
    );
    t.add(
        "watch::undecodable_object_ends_with_an_error",
        NOTHING,
        watch_undecodable_object_ends_with_an_error,
    );
    t.add(
        "watch::other_error_event_is_an_error",
        NOTHING,
        watch_other_error_event_is_an_error,
    );
    t.add("watch::caller_can_stop", NOTHING, watch_caller_can_stop);
    t.add("watch::namespaces", NOTHING, watch_namespaces);
    t.add(
        "watch::forbidden_is_rejected",
        NOTHING,
        watch_forbidden_is_rejected,
    );
    t.add(
        "fuzz::watch_streams_never_panic",
        NOTHING,
        fuzz_watch_streams_never_panic,
    );
    t.add(
        "patch::label_sends_a_merge_patch_of_the_labels_and_the_uid",
        NOTHING,
        label_sends_a_merge_patch_of_the_labels_and_the_uid,
    );
    t.add(
        "delete::sends_the_uid_and_version_as_preconditions",
        NOTHING,
        delete_sends_the_uid_and_version_as_preconditions,
    );
    t.add(
        "delete::a_failed_precondition_is_refused",
        NOTHING,
        delete_precondition_failed_is_refused,
    );
    t.add(
        "delete::a_missing_pod_is_not_found",
        NOTHING,
        delete_missing_pod_is_not_found,
    );
    t.add(
        "delete::forbidden_names_the_verb",
        NOTHING,
        delete_forbidden_names_the_verb,
    );
    t.declare(
        38,
        &[
            ("pod", 7),
            ("namespace", 2),
            ("patch", 6),
            ("delete", 4),
            ("list", 3),
            ("watch", 15),
            ("fuzz", 1),
        ],
    );
    t.run()
}
