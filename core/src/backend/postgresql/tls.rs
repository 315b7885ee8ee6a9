//! TLS for the fleet connection: an OpenSSL context that trusts the configured CA alone,
//! with the server's name checked. Built by hand rather than with `SslConnector`, which
//! first loads the system's whole CA bundle: about 50 ms of every login, since each sshd
//! connection is a new process, for certificates that are then never consulted.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslContext, SslContextBuilder, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509CheckFlags;
use openssl::x509::{X509, X509VerifyResult};
use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_openssl::SslStream;

/// What each connection's TLS session is made from.
#[derive(Clone)]
pub(super) struct Tls(SslContext);

impl Tls {
    /// Trusts `ca` only, or, with no CA given, the system's bundle (an administrator's
    /// `fleet` command, run once, not at each login).
    pub(super) fn new(
        ca: Option<X509>,
        client: Option<(&X509, &openssl::pkey::PKeyRef<openssl::pkey::Private>)>,
    ) -> Result<Self, ErrorStack> {
        let mut b = SslContextBuilder::new(SslMethod::tls_client())?;
        b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
        match ca {
            Some(ca) => {
                let mut store = X509StoreBuilder::new()?;
                store.add_cert(ca)?;
                b.set_verify_cert_store(store.build())?;
            }
            None => b.set_default_verify_paths()?,
        }
        b.set_verify(SslVerifyMode::PEER);
        if let Some((cert, key)) = client {
            b.set_certificate(cert)?;
            b.set_private_key(key)?;
            b.check_private_key()?;
        }
        Ok(Self(b.build()))
    }

    /// As [`Tls::new`] with a CA file on disk.
    pub(super) fn with_ca_file(ca: Option<&std::path::Path>) -> Result<Self, String> {
        let ca = ca
            .map(|p| {
                let pem = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
                X509::from_pem(&pem).map_err(|e| format!("{}: {e}", p.display()))
            })
            .transpose()?;
        Self::new(ca, None).map_err(|e| format!("TLS setup: {e}"))
    }
}

impl<S> MakeTlsConnect<S> for Tls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = ErrorStack;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Connect, ErrorStack> {
        let mut ssl = Ssl::new(&self.0)?;
        let param = ssl.param_mut();
        param.set_hostflags(X509CheckFlags::NO_PARTIAL_WILDCARDS);
        match domain.parse::<IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            // A Unix socket (no name, or its directory): the server offers no TLS there,
            // and a fleet command over the local socket goes on in the clear.
            Err(_) if domain.is_empty() || domain.starts_with('/') => {}
            Err(_) => {
                param.set_host(domain)?;
                ssl.set_hostname(domain)?;
            }
        }
        Ok(Connect(ssl))
    }
}

/// One handshake, set up for one server name.
pub(super) struct Connect(Ssl);

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = Box<dyn Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Stream<S>, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let mut stream = SslStream::new(self.0, stream)?;
            match Pin::new(&mut stream).connect().await {
                Ok(()) => Ok(Stream(stream)),
                Err(error) => Err(Box::new(HandshakeError {
                    verify: stream.ssl().verify_result(),
                    error,
                }) as Self::Error),
            }
        })
    }
}

/// A failed handshake, with the certificate check's verdict when that was the reason.
#[derive(Debug)]
struct HandshakeError {
    error: openssl::ssl::Error,
    verify: X509VerifyResult,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if self.verify != X509VerifyResult::OK {
            write!(f, ": {}", self.verify)?;
        }
        Ok(())
    }
}

impl Error for HandshakeError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.error)
    }
}

/// The encrypted connection.
pub(super) struct Stream<S>(SslStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // Certificate authentication sends no password, so there is nothing to bind.
        ChannelBinding::none()
    }
}
