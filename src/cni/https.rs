//! A small blocking HTTPS client: one `GET` per connection over rustls, HTTP/1.1 with
//! `Connection: close`, bodies framed by Content-Length, chunked encoding or the end of the
//! stream. Enough to read a pod from the API server without an async runtime.
//!
//! Host names are resolved without NSS (the plugin runs on the host, and meshtables never
//! loads NSS modules): an IP literal as it is, else `/etc/hosts`, else A/AAAA queries over UDP
//! to the servers in `/etc/resolv.conf`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

/// Errors of one request.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, io::Error),
    #[error("malformed HTTP response from {0}: {1}")]
    Malformed(String, &'static str),
}

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET path` from `host:port` (resolved as described above), with extra header lines.
pub fn get(
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, HttpError> {
    let addrs = resolve(host, port)?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let mut last = None;
    let mut tcp = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let tcp = tcp.ok_or_else(|| {
        HttpError::Connect(
            authority.clone(),
            last.unwrap_or_else(|| io::Error::other("no address")),
        )
    })?;
    let set = |r: io::Result<()>| r.map_err(|e| HttpError::Connect(authority.clone(), e));
    set(tcp.set_read_timeout(Some(timeout)))?;
    set(tcp.set_write_timeout(Some(timeout)))?;
    let conn = rustls::ClientConnection::new(tls, server_name)
        .map_err(|e| HttpError::Tls(authority.clone(), io::Error::other(e)))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: meshtables-cni\r\nConnection: close\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| HttpError::Tls(authority.clone(), e))?;
    read_response(&mut stream).map_err(|e| match e {
        ReadError::Io(e) => HttpError::Tls(authority, e),
        ReadError::Malformed(what) => HttpError::Malformed(authority, what),
    })
}

enum ReadError {
    Io(io::Error),
    Malformed(&'static str),
}

/// Reads one response, stopping as soon as its framing says the body is complete (a server
/// may close without TLS close_notify, which rustls reports as an unexpected EOF).
fn read_response(r: &mut impl Read) -> Result<Response, ReadError> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut eof = false;
    // A pod is a few KB; a response this large is not one.
    const LIMIT: usize = 16 << 20;
    let mut fill = |buf: &mut Vec<u8>, eof: &mut bool| -> Result<(), ReadError> {
        if buf.len() > LIMIT {
            return Err(ReadError::Malformed("the response is larger than 16 MiB"));
        }
        match r.read(&mut chunk) {
            Ok(0) => *eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => *eof = true,
            Err(e) => return Err(ReadError::Io(e)),
        }
        Ok(())
    };
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if eof {
            return Err(ReadError::Malformed(
                "the connection closed inside the headers",
            ));
        }
        fill(&mut buf, &mut eof)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or(ReadError::Malformed("no status line"))?;
    let header = |name: &str| {
        head.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let chunked = header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length: Option<usize> = header("content-length").and_then(|v| v.parse().ok());
    let mut body_start = head_end;
    if chunked {
        let mut body = Vec::new();
        loop {
            // A chunk: hex size line, data, CRLF; size 0 ends the body.
            let Some(nl) = buf[body_start..].windows(2).position(|w| w == b"\r\n") else {
                if eof {
                    return Err(ReadError::Malformed("truncated chunk size"));
                }
                fill(&mut buf, &mut eof)?;
                continue;
            };
            let size_line = String::from_utf8_lossy(&buf[body_start..body_start + nl]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| ReadError::Malformed("bad chunk size"))?;
            if size == 0 {
                return Ok(Response { status, body });
            }
            let data = body_start + nl + 2;
            while buf.len() < data + size + 2 {
                if eof {
                    return Err(ReadError::Malformed("truncated chunk"));
                }
                fill(&mut buf, &mut eof)?;
            }
            body.extend_from_slice(&buf[data..data + size]);
            body_start = data + size + 2;
        }
    }
    loop {
        if length.is_some_and(|n| buf.len() - head_end >= n) {
            buf.truncate(head_end + length.unwrap_or(0));
            break;
        }
        if eof {
            if length.is_some() {
                return Err(ReadError::Malformed(
                    "the body is shorter than Content-Length",
                ));
            }
            break;
        }
        fill(&mut buf, &mut eof)?;
    }
    Ok(Response {
        status,
        body: buf.split_off(head_end),
    })
}

/// Addresses for `host`: an IP literal, `/etc/hosts`, then DNS over UDP.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, HttpError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let found = hosts_lookup(&hosts, host);
    if !found.is_empty() {
        return Ok(found
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let servers = crate::config::resolv_conf_servers(&resolv);
    if servers.is_empty() {
        return Err(HttpError::Resolve(
            host.into(),
            "not in /etc/hosts and no nameserver in /etc/resolv.conf".into(),
        ));
    }
    let mut why = String::new();
    for server in servers.iter().take(3) {
        let mut ips = Vec::new();
        for qtype in [1u16, 28] {
            match dns_query(*server, host, qtype) {
                Ok(found) => ips.extend(found),
                Err(e) => why = format!("{server}: {e}"),
            }
        }
        if !ips.is_empty() {
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    }
    Err(HttpError::Resolve(
        host.into(),
        if why.is_empty() {
            "no A or AAAA record".into()
        } else {
            why
        },
    ))
}

/// Addresses of `name` in hosts-format `text`.
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let ip: IpAddr = f.next()?.parse().ok()?;
            f.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

/// One recursive-desired query of `qtype` (1 = A, 28 = AAAA) for `name`.
fn dns_query(server: IpAddr, name: &str, qtype: u16) -> io::Result<Vec<IpAddr>> {
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        & 0xffff) as u16;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(io::Error::other("not a host name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.connect(SocketAddr::new(server, 53))?;
    sock.send(&q)?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf)?;
    parse_answers(&buf[..n], id, qtype).ok_or_else(|| io::Error::other("malformed DNS answer"))
}

/// The A/AAAA records of a DNS response (CNAMEs the server followed come along in it).
fn parse_answers(m: &[u8], id: u16, qtype: u16) -> Option<Vec<IpAddr>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]));
    if u16_at(0)? != id || m.get(3)? & 0x0f != 0 {
        return (u16_at(0)? == id).then(Vec::new);
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *m.get(i)? as usize;
            if len == 0 {
                return Some(i + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += len + 1;
        }
    };
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(i)?;
        let (rtype, rdlen) = (u16_at(i)?, u16_at(i + 8)? as usize);
        let data = m.get(i + 10..i + 10 + rdlen)?;
        match (rtype, qtype, rdlen) {
            (1, 1, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (28, 28, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {}
        }
        i += 10 + rdlen;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let text = "127.0.0.1 localhost\n10.96.0.1  kubernetes kubernetes.default # api\n::1 ip6-localhost\n";
        assert_eq!(
            hosts_lookup(text, "kubernetes.default"),
            ["10.96.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(text, "api").is_empty());
    }

    #[test]
    fn responses_by_length_chunks_and_close() {
        let parse = |raw: &str| {
            let mut r = raw.as_bytes();
            match read_response(&mut r) {
                Ok(resp) => Ok((resp.status, String::from_utf8(resp.body).unwrap())),
                Err(ReadError::Malformed(m)) => Err(m.to_string()),
                Err(ReadError::Io(e)) => Err(e.to_string()),
            }
        };
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap(),
            (200, "{}".into())
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4;x=y\r\n\":1}\r\n0\r\n\r\n")
                .unwrap(),
            (200, "{\"a\":1}".into())
        );
        assert_eq!(
            parse("HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap(),
            (404, "nope".into())
        );
        assert!(parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse("HTTP/1.1 200").is_err());
    }

    #[test]
    fn dns_answers() {
        // Response to id 0x1234 for "a.b" A: one CNAME-less answer 10.0.0.7 (name by pointer).
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 7]);
        assert_eq!(
            parse_answers(&m, 0x1234, 1).unwrap(),
            ["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        assert!(parse_answers(&m, 0x9999, 1).is_none());
    }
}
