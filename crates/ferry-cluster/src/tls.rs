//! TLS on the node links (`cluster_tls`): both ends present a certificate
//! signed by the cluster's CA and check the other's, the dialer against
//! the host of the address it dials. The shared-secret handshake
//! (`handshake`) then runs inside TLS as without it, so a node still
//! proves it holds the secret; TLS adds confidentiality and keeps a relay
//! in the middle out. The configurations are built by the caller (the
//! binary, from the broker's certificate settings).

use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a peer may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The node's TLS configurations for its links.
#[derive(Clone)]
pub struct LinkTls {
    /// For accepted connections (requires a client certificate).
    pub server: Arc<ServerConfig>,
    /// For dialed connections (checks the server's certificate, offers
    /// this node's).
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkTls(..)")
    }
}

/// A link's byte stream: plain TCP or TLS over it.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A boxed link stream.
pub(crate) type BoxStream = Box<dyn Stream>;

/// The dialing side: TLS to `addr` (`host:port`) when configured.
pub(crate) async fn dial(
    tls: Option<&LinkTls>,
    tcp: TcpStream,
    addr: &str,
) -> io::Result<BoxStream> {
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
    let s = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsConnector::from(tls.client.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::new(s))
}

/// The accepting side: TLS when configured.
pub(crate) async fn accept(tls: Option<&LinkTls>, tcp: TcpStream) -> io::Result<BoxStream> {
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let s = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        TlsAcceptor::from(tls.server.clone()).accept(tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    Ok(Box::new(s))
}
