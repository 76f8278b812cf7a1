//! Outgoing HTTP for plugins (`wasi:http/outgoing-handler`): every request must target an
//! allowed `scheme://host:port`, the host name is resolved here, every resolved address
//! must be public (unless private networks are allowed), and the connection goes to the
//! checked address, so DNS rebinding cannot redirect it. TLS verifies the original name.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, ready};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::id::CapabilityId;
use crate::permissions::{Permissions, Scheme, is_public_ip};

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
const DNS_TIMEOUT: Duration = Duration::from_secs(10);

/// The wasi-http hooks of one call: the plugin's permissions decide every request.
pub(crate) struct HttpPolicy {
    pub(crate) plugin: CapabilityId,
    pub(crate) permissions: Arc<Permissions>,
    /// Counts the requests the permissions refuse.
    pub(crate) egress_denied: metrics::Counter,
    /// Whether this call was refused something (a host, a secret): its failure is `denied`.
    pub(crate) denied: bool,
}

type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> SendFuture {
        drop(fut);
        let dest = match check_destination(request.uri(), &self.permissions) {
            Ok(dest) => dest,
            Err(e) => {
                tracing::info!(capability = %self.plugin, uri = %request.uri(),
                    "outgoing HTTP denied: host not allowed");
                self.denied = true;
                self.egress_denied.increment(1);
                return Box::new(async move { Err(e) });
            }
        };
        let plugin = self.plugin.clone();
        let permissions = self.permissions.clone();
        let egress_denied = self.egress_denied.clone();
        Box::new(async move {
            let (response, io) = send_checked(
                &plugin,
                &permissions,
                &egress_denied,
                dest,
                request,
                options,
            )
            .await?;
            Ok((response, io))
        })
    }
}

/// Where a request may go, decided before any network I/O except DNS.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Destination {
    pub(crate) scheme: Scheme,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// Checks a request's URI against the permissions.
pub(crate) fn check_destination(
    uri: &http::Uri,
    permissions: &Permissions,
) -> Result<Destination, HttpError> {
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        _ => return Err(HttpError::HttpRequestUriInvalid),
    };
    let authority = uri.authority().ok_or(HttpError::HttpRequestUriInvalid)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    });
    if !permissions.allows_host(scheme, &host, port) {
        return Err(HttpError::HttpRequestDenied);
    }
    Ok(Destination { scheme, host, port })
}

/// Resolves `host` and checks every address; returns the addresses to try.
pub(crate) async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, HttpError> {
    let addrs: Vec<SocketAddr> = if let Ok(ip) = host.parse::<IpAddr>() {
        vec![SocketAddr::new(ip, port)]
    } else {
        match tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Err(_) => return Err(HttpError::DnsTimeout),
            Ok(Err(_)) => return Err(HttpError::DestinationNotFound),
            Ok(Ok(addrs)) => addrs.collect(),
        }
    };
    if addrs.is_empty() {
        return Err(HttpError::DestinationNotFound);
    }
    // One private address is enough to refuse: a name that mixes public and private
    // answers is how rebinding attacks look.
    if !allow_private && addrs.iter().any(|a| !is_public_ip(a.ip())) {
        return Err(HttpError::DestinationIpProhibited);
    }
    Ok(addrs)
}

async fn send_checked(
    plugin: &CapabilityId,
    permissions: &Permissions,
    egress_denied: &metrics::Counter,
    dest: Destination,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
    let addrs = match resolve_checked(&dest.host, dest.port, permissions.allow_private_networks)
        .await
    {
        Ok(addrs) => addrs,
        Err(e) => {
            if matches!(e, HttpError::DestinationIpProhibited) {
                egress_denied.increment(1);
            }
            tracing::info!(capability = %plugin, host = %dest.host, error = %e, "outgoing HTTP refused");
            return Err(e);
        }
    };

    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let first_byte_timeout = options
        .and_then(|o| o.first_byte_timeout)
        .unwrap_or(DEFAULT_FIRST_BYTE_TIMEOUT);

    let mut last_err = HttpError::ConnectionRefused;
    let mut tcp = None;
    for addr in &addrs {
        match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Ok(Err(e)) => last_err = HttpError::Connect(e),
            Err(_) => last_err = HttpError::ConnectionTimeout,
        }
    }
    let tcp = tcp.ok_or(last_err)?;

    let stream: Box<dyn Stream> = match dest.scheme {
        Scheme::Http => Box::new(tcp),
        Scheme::Https => {
            use rustls::pki_types::ServerName;
            let name = match dest.host.parse::<IpAddr>() {
                Ok(ip) => ServerName::from(ip),
                Err(_) => ServerName::try_from(dest.host.clone())
                    .map_err(|_| HttpError::HttpRequestUriInvalid)?,
            };
            let connector = tokio_rustls::TlsConnector::from(tls_config());
            let tls = connector.connect(name, tcp).await.map_err(HttpError::Tls)?;
            Box::new(tls)
        }
    };

    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| HttpError::ConnectionTimeout)??;

    // The request carries scheme and authority; on the wire (no proxy) only the path.
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    *request.uri_mut() = path.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;

    // Drive the connection while waiting for the response head.
    let mut send = pin!(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request)
    ));
    let mut conn = Some(conn);
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(res) = send.as_mut().poll(cx) {
            return Poll::Ready(res);
        }
        if let Some(c) = conn.as_mut() {
            let done = ready!(Pin::new(c).poll(cx));
            conn = None;
            if let Err(e) = done {
                return Poll::Ready(Ok(Err(e)));
            }
            return send.as_mut().poll(cx);
        }
        Poll::Pending
    })
    .await
    .map_err(|_| HttpError::ConnectionReadTimeout)?
    .map_err(HttpError::from)?;

    let response = response.map(|body| body.map_err(HttpError::from).boxed_unsync());
    let io: IoFuture = Box::new(async move {
        match conn {
            Some(conn) => conn.await.map_err(HttpError::from),
            None => Ok(()),
        }
    });
    Ok((response, io))
}

trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                // The ring provider supports the default protocol versions.
                .expect("ring supports TLS 1.2 and 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn perms(hosts: &[&str], allow_private: bool) -> Permissions {
        Permissions {
            allowed_hosts: hosts.iter().map(|h| h.parse().unwrap()).collect(),
            secrets: BTreeSet::new(),
            kv: None,
            allow_private_networks: allow_private,
            kv_quota: crate::permissions::KvQuota::default(),
        }
    }

    #[test]
    fn destinations_are_checked_against_allowed_hosts() {
        let p = perms(
            &["https://api.example.com", "http://*.test.org:8080"],
            false,
        );
        let ok = |u: &str| check_destination(&u.parse().unwrap(), &p);
        assert!(ok("https://api.example.com/v1?q=1").is_ok());
        assert!(ok("https://API.EXAMPLE.COM:443/").is_ok());
        assert!(ok("http://x.test.org:8080/").is_ok());
        assert!(matches!(
            ok("http://api.example.com/"),
            Err(HttpError::HttpRequestDenied)
        ));
        assert!(matches!(
            ok("https://evil.com/"),
            Err(HttpError::HttpRequestDenied)
        ));
        assert!(matches!(
            ok("https://api.example.com:444/"),
            Err(HttpError::HttpRequestDenied)
        ));
        assert!(matches!(
            ok("http://test.org:8080/"),
            Err(HttpError::HttpRequestDenied)
        ));
    }

    #[tokio::test]
    async fn private_addresses_are_refused_unless_allowed() {
        assert!(matches!(
            resolve_checked("127.0.0.1", 80, false).await,
            Err(HttpError::DestinationIpProhibited)
        ));
        assert!(matches!(
            resolve_checked("localhost", 80, false).await,
            Err(HttpError::DestinationIpProhibited)
        ));
        assert!(matches!(
            resolve_checked("169.254.169.254", 80, false).await,
            Err(HttpError::DestinationIpProhibited)
        ));
        assert_eq!(
            resolve_checked("127.0.0.1", 80, true).await.unwrap().len(),
            1
        );
    }
}
