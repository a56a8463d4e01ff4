//! The agent's Prometheus metrics (`--metrics-address`, off by default): enrolled pods, repairs
//! by cause (a broken sidecar pod deleted or labelled among them), ztunnel connections, API
//! errors, in the text exposition format on `GET
//! /metrics`. A connection has 2 s to send its request (at most 4 KiB) and at most
//! `MAX_CLIENTS` are served at once; others are closed at once, so a stranger cannot stall
//! the agent or pile up threads.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::enrol::Agent;
use super::repair::{Counts, Tally};

const MAX_CLIENTS: usize = 4;
const MAX_REQUEST: usize = 4 << 10;
const DEADLINE: Duration = Duration::from_secs(2);

/// Listens on `addr` and serves until the agent is gone; `repairs`: the sidecar repair's
/// deletes and labels.
pub fn serve(
    addr: SocketAddr,
    agent: Weak<Agent>,
    repairs: Arc<Counts>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let busy = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new()
        .name("agent-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                if agent.strong_count() == 0 {
                    return;
                }
                if busy.load(Ordering::SeqCst) >= MAX_CLIENTS {
                    drop(conn);
                    continue;
                }
                busy.fetch_add(1, Ordering::SeqCst);
                let (a, b, r) = (agent.clone(), busy.clone(), repairs.clone());
                let spawned = std::thread::Builder::new()
                    .name("agent-metrics-conn".into())
                    .spawn(move || {
                        answer(conn, &a, &r);
                        b.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(bound)
}

fn answer(mut conn: TcpStream, agent: &Weak<Agent>, repairs: &Counts) {
    let _ = conn.set_read_timeout(Some(DEADLINE));
    let _ = conn.set_write_timeout(Some(DEADLINE));
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST {
            return;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, body) = match (method, path, agent.upgrade()) {
        ("GET", "/metrics", Some(a)) => ("200 OK", text(&a, &repairs.get())),
        ("GET", "/metrics", None) => ("503 Service Unavailable", String::new()),
        _ => ("404 Not Found", String::new()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes());
}

/// The exposition text; `sidecars`: the sidecar repair's deletes and labels.
pub fn text(agent: &Agent, sidecars: &Tally) -> String {
    let r = agent.repaired();
    let c = agent.counts();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in lines {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "meshtables_agent_enrolled_pods",
        "gauge",
        "Pods this agent holds in the mesh (rules in, handed to ztunnel).",
        &[(String::new(), agent.enrolled().len() as u64)],
    );
    metric(
        "meshtables_agent_ztunnel_connections",
        "gauge",
        "ztunnels connected over ZDS (two during a ztunnel upgrade).",
        &[(String::new(), agent.zds.connections() as u64)],
    );
    metric(
        "meshtables_agent_repairs_total",
        "counter",
        "What the drift check found missing and put back, by cause.",
        &[
            ("{cause=\"node_rules\"}".into(), r.host),
            ("{cause=\"pod_rules\"}".into(), r.pod_rules),
            ("{cause=\"pod_namespace\"}".into(), r.namespaces),
            ("{cause=\"sidecar\"}".into(), r.sidecars),
            ("{cause=\"sidecar_deleted\"}".into(), sidecars.deleted),
            ("{cause=\"sidecar_labelled\"}".into(), sidecars.labelled),
        ],
    );
    metric(
        "meshtables_agent_repair_failures_total",
        "counter",
        "Drift checks that could not run or repairs that failed (a broken sidecar pod's delete or label among them).",
        &[(String::new(), r.failed + sidecars.failed)],
    );
    metric(
        "meshtables_agent_sidecar_repairs_skipped_total",
        "counter",
        "Broken sidecar pods not deleted or labelled: labelled already, gone, or changed since read.",
        &[(String::new(), sidecars.skipped)],
    );
    metric(
        "meshtables_agent_enrolments_total",
        "counter",
        "Pods enrolled (by the plugin's ADD or the watch).",
        &[(String::new(), c.enrolments)],
    );
    metric(
        "meshtables_agent_removals_total",
        "counter",
        "Pods taken out of the mesh.",
        &[(String::new(), c.removals)],
    );
    metric(
        "meshtables_agent_api_errors_total",
        "counter",
        "Failed requests to the API server (lists, watches, reads, patches).",
        &[(String::new(), c.api_errors)],
    );
    out
}
