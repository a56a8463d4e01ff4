//! HTTPS requests to the API server, with ureq doing HTTP/1.1 (framing, chunked bodies,
//! limits, query encoding) and this module supplying only what ureq cannot know: the TLS
//! configuration built from the kubeconfig (its CA, client certificate, `tls-server-name`),
//! given to rustls through a ureq connector, and name resolution without NSS (`dns`).
//!
//! Two shapes of exchange: `request` (a GET, PATCH or DELETE whose answer is read whole, bounded by
//! `MAX_BODY`, the whole exchange bounded by the client's timeout) and `stream` (a watch: the
//! answer is handed back as a reader to be consumed incrementally; only connecting and the
//! response headers are bounded by the client's timeout, then each transport read by the
//! caller's `per_read`, never the whole body, which a watch keeps open for minutes).
//!
//! Failures are classified by what the runtime should do about them: a certificate the CA
//! does not verify is a configuration error (`CertRejected`); everything else that keeps a
//! response from arriving whole (refused, unreachable, timed out, malformed, too large) is
//! worth retrying later.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use ureq::http::Uri;
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, TcpConnector, Transport,
    TransportAdapter,
};

/// The largest response read whole: a pod is a few KB, the list of a node's pods a few MB.
pub const MAX_BODY: u64 = 16 << 20;

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// A streamed response: status code and a reader of the (de-chunked) body.
pub struct Streamed {
    pub status: u16,
    pub body: ureq::BodyReader<'static>,
}

/// The methods the Kubernetes client uses, a PATCH or DELETE with its body (a DELETE's is
/// its `DeleteOptions`, JSON, as client-go sends them).
#[derive(Debug, Clone, Copy)]
pub enum Method<'a> {
    Get,
    Patch {
        content_type: &'a str,
        body: &'a [u8],
    },
    Delete {
        body: &'a [u8],
    },
}

/// What a request asks for: path, query pairs (ureq percent-encodes them, so a value cannot
/// add a parameter) and extra headers.
pub struct Request<'a> {
    pub path: &'a str,
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The server's certificate does not verify against the kubeconfig's CA (or the server
    /// refused ours): retrying cannot help.
    #[error("TLS: {0}")]
    CertRejected(String),
    /// No whole response arrived: refused, unreachable, timed out, malformed, too large.
    #[error("{0}")]
    Unavailable(String),
}

/// What the TLS connector reports when the handshake fails on a certificate.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct CertRejected(String);

/// A client for one server.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host:port`, as the request URL starts.
    base: String,
    /// The bound on one whole exchange, and on connecting and headers of a stream.
    timeout: Duration,
}

impl Client {
    /// A client for `host:port`, verifying with `tls` and presenting `server_name`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .https_only(true)
            // The runtime's environment may carry HTTPS_PROXY for image pulls; the API server
            // of the node's own cluster is reached directly, as istio-cni does.
            .proxy(None)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .user_agent("meshtables-cni")
            .build();
        let connector = ().chain(TcpConnector::default()).chain(KubeTls { tls, server_name });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Client {
            agent: ureq::Agent::with_parts(config, connector, NssFreeResolver),
            base: format!("https://{authority}"),
            timeout,
        }
    }

    /// One exchange, bounded by the client's timeout; the body is read whole, up to `MAX_BODY`.
    pub fn request(&self, method: Method, r: &Request) -> Result<Response, HttpError> {
        let url = format!("{}{}", self.base, r.path);
        let mut resp = match method {
            Method::Get => prepare(self.agent.get(url), r).call(),
            Method::Patch { content_type, body } => prepare(self.agent.patch(url), r)
                .content_type(content_type)
                .send(body),
            // ureq sends no body with a DELETE unless told; the API server reads one.
            Method::Delete { body } => prepare(self.agent.delete(url), r)
                .force_send_body()
                .content_type("application/json")
                .send(body),
        }
        .map_err(classify)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Response { status, body })
    }

    /// A `GET` whose body is a stream: connecting, the handshake and the response headers are
    /// bounded by the client's timeout; after that no total bound applies, only `per_read` to
    /// each transport read. The caller bounds what it buffers.
    pub fn stream(&self, r: &Request, per_read: Duration) -> Result<Streamed, HttpError> {
        let url = format!("{}{}", self.base, r.path);
        let resp = prepare(self.agent.get(url), r)
            .config()
            .timeout_global(None)
            .timeout_connect(Some(self.timeout))
            .timeout_send_request(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout))
            .timeout_per_read(Some(per_read))
            .build()
            .call()
            .map_err(classify)?;
        let status = resp.status().as_u16();
        Ok(Streamed {
            status,
            body: resp.into_body().into_reader(),
        })
    }
}

fn prepare<B>(mut req: ureq::RequestBuilder<B>, r: &Request) -> ureq::RequestBuilder<B> {
    for (k, v) in r.query {
        req = req.query(*k, *v);
    }
    for (k, v) in r.headers {
        req = req.header(*k, *v);
    }
    req
}

fn classify(e: ureq::Error) -> HttpError {
    match e {
        ureq::Error::Other(inner) if inner.is::<CertRejected>() => {
            HttpError::CertRejected(inner.to_string())
        }
        ureq::Error::Io(io) if io.get_ref().is_some_and(|i| i.is::<CertRejected>()) => {
            HttpError::CertRejected(io.to_string())
        }
        ureq::Error::BodyExceedsLimit(n) => {
            HttpError::Unavailable(format!("the response is larger than {n} bytes"))
        }
        other => HttpError::Unavailable(other.to_string()),
    }
}

/// Resolves the URL's host with `dns::resolve` (no NSS).
#[derive(Debug)]
struct NssFreeResolver;

impl Resolver for NssFreeResolver {
    fn resolve(
        &self,
        uri: &Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(443);
        let found = super::dns::resolve(host, port)
            .map_err(|e| ureq::Error::Io(std::io::Error::other(e.to_string())))?;
        // ureq keeps at most 16 addresses (`MAX_ADDRS`).
        let mut out = self.empty();
        for addr in found.into_iter().take(16) {
            out.push(addr);
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

/// Wraps the TCP transport in TLS with the kubeconfig's rustls configuration.
struct KubeTls {
    tls: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for KubeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl<In: Transport> Connector<In> for KubeTls {
    type Out = TlsTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        let mut conn = ClientConnection::new(self.tls.clone(), self.server_name.clone())
            .map_err(|e| ureq::Error::Other(Box::new(CertRejected(e.to_string()))))?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock).map_err(handshake_error)?;
        Ok(Some(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned { conn, sock },
        }))
    }
}

/// A certificate the peer or we refused is final; anything else (reset, timeout) is I/O.
fn handshake_error(e: std::io::Error) -> ureq::Error {
    use rustls::AlertDescription as A;
    let cert = match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => true,
        Some(rustls::Error::AlertReceived(a)) => matches!(
            a,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::CertificateRequired
        ),
        _ => false,
    };
    if cert {
        ureq::Error::Other(Box::new(CertRejected(e.to_string())))
    } else {
        ureq::Error::Io(e)
    }
}

struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport").finish()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
