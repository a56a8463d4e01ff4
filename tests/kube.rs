//! The CNI plugin's Kubernetes client against servers that misbehave. In-process (no root):
//!
//! - one test per failure class, each mapped to the CNI code that tells the runtime what to do:
//!   a certificate the kubeconfig's CA does not verify, and credentials refused (401/403), are
//!   configuration errors naming the kubeconfig and the server (7); a refused connection or a
//!   server that never answers is "try again later" (11); an unknown pod is 100;
//! - a fuzz test: thousands of mutated responses (bad chunk sizes, huge or lying lengths,
//!   truncated bodies, broken status lines and headers, wrong JSON types, flipped bytes) go
//!   through the response reader and the pod decoding; none may panic, and each ends as a pod
//!   or as a CNI error with one of those codes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]
#![cfg(feature = "kubernetes")]

#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/rng.rs"]
mod rng;

use std::path::PathBuf;

use meshtables::cni::{self, CniError, kube, pod};
use meshtables::flags::Flags;
use rng::Rng;
use serde_json::{Value, json};

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

#[test]
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

#[test]
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

#[test]
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

#[test]
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

#[test]
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

#[test]
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

#[test]
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
