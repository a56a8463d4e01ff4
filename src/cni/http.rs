//! One HTTPS `GET` to the API server, with ureq doing HTTP/1.1 (framing, chunked bodies,
//! limits) and this module supplying only what ureq cannot know: the TLS configuration built
//! from the kubeconfig (its CA, client certificate, `tls-server-name`), given to rustls
//! through a ureq connector, and name resolution without NSS (`dns`).
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

/// The largest response accepted: a pod is a few KB.
pub const MAX_BODY: u64 = 16 << 20;

/// A response: status code and body.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
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

/// A GET client for one server.
pub struct Client {
    agent: ureq::Agent,
    /// `https://host:port`, as the request URL starts.
    base: String,
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
        }
    }

    /// `GET path` with extra headers; the body is read whole, up to `MAX_BODY`.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Response, HttpError> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.call().map_err(classify)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(classify)?;
        Ok(Response { status, body })
    }
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
