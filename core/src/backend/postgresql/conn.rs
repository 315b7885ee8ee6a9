//! One connection to the fleet database with a client-side deadline on every wait: name
//! resolution and the whole connection (TCP, TLS, startup, authentication, the
//! read-write check) within `connect_timeout_ms` per address, and each call, a commit
//! waiting for a synchronous standby included, within `statement_timeout_ms`.
//!
//! The server's own timeouts cannot help when it accepts the connection and then stops
//! answering (a stopped process, a dead disk), so the deadlines are kept here, on a
//! current-thread tokio runtime that this thread drives: no thread is started in the PAM
//! process. Names are resolved by hickory from /etc/hosts and resolv.conf on that runtime,
//! since the C library's resolver has no deadline.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use tokio::net::TcpStream;
use tokio::runtime::{Builder, Runtime};
use tokio::time::{Instant, timeout_at};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config};

use super::tls::{Connect, Stream, Tls};
use crate::backend::Phase;

/// Why a connection or a call failed.
#[derive(Debug)]
pub enum Failure {
    /// No answer before the deadline.
    Timeout {
        /// The server, as `host:port (address)`.
        server: String,
        /// What was being waited for.
        phase: Phase,
        /// How long it was given.
        after: Duration,
    },
    /// The server or the network said no.
    Failed {
        /// The server, as `host:port (address)`.
        server: String,
        /// Where it failed.
        phase: Phase,
        /// Why, with the causes under it.
        why: String,
        /// The server's error, when it sent one.
        error: Option<tokio_postgres::Error>,
    },
    /// A server that answers but does not take writes (a standby, or a fenced primary).
    ReadOnly {
        /// The server, as `host:port (address)`.
        server: String,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout {
                server,
                phase,
                after,
            } => write!(
                f,
                "{server}: no answer within {} ms ({phase})",
                after.as_millis()
            ),
            Self::Failed {
                server, phase, why, ..
            } => write!(f, "{server}: {why} ({phase})"),
            Self::ReadOnly { server } => {
                write!(f, "{server}: does not take writes (a standby) (check)")
            }
        }
    }
}

impl Failure {
    /// The server it concerns, as `host:port (address)`.
    pub fn server(&self) -> &str {
        match self {
            Self::Timeout { server, .. }
            | Self::Failed { server, .. }
            | Self::ReadOnly { server } => server,
        }
    }

    /// Where it stopped.
    pub fn phase(&self) -> Phase {
        match self {
            Self::Timeout { phase, .. } | Self::Failed { phase, .. } => *phase,
            Self::ReadOnly { .. } => Phase::Check,
        }
    }

    /// The server's refusal of this login (no mapping of the certificate to the role),
    /// as opposed to a server that cannot be reached.
    pub fn login_refused(&self) -> bool {
        matches!(self, Self::Failed { phase: Phase::Auth, error: Some(e), .. }
        if e.as_db_error().is_some_and(|db| {
            db.code() == &tokio_postgres::error::SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || db.code() == &tokio_postgres::error::SqlState::INVALID_PASSWORD
        }))
    }
}

/// What to do about a server that wants a password from a host, which only ever
/// presents a certificate: twofactor's pg_hba.conf lines did not match it. They match
/// only members of twofactor_hosts, so either the host's role is gone (`remove-host`) or
/// a broader line matched first.
fn auth_hint(why: &str) -> &'static str {
    if why.contains("password missing") {
        "; the server asked for a password, so twofactor's 'hostssl ... cert \
         map=twofactor' lines did not match: if this host was removed from the fleet \
         (its role no longer exists: 'twofactor fleet hosts' lists the hosts), add it \
         again with 'twofactor fleet add-host'; otherwise a pg_hba.conf line above \
         twofactor's matched first (Debian's 'host all all 127.0.0.1/32 scram-sha-256' \
         does): move twofactor's lines above it and reload"
    } else {
        ""
    }
}

/// An error with the errors under it (the TLS library's reason is in a source).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// What a connection needs besides the TLS context.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The configured servers, in order.
    pub hosts: &'a [(String, u16)],
    /// The database.
    pub dbname: &'a str,
    /// The roles to log in as, in order (see `Role::logins`).
    pub logins: &'a [String],
    /// Per address: resolution and the whole connection.
    pub connect_timeout: Duration,
    /// Per call, commit included.
    pub statement_timeout: Duration,
    /// Whether to ask each server if it takes writes: skipped with one address, where
    /// there is nowhere else to go (a standby then refuses the write, and the login
    /// fails closed).
    pub read_write_check: bool,
}

/// An open connection and the runtime that drives it.
pub struct Conn {
    rt: Runtime,
    client: Client,
    /// The server it reached, as `host:port (address)`.
    pub server: String,
    statement_timeout: Duration,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The TLS handshake of [`Connect`], marking when it is done: a deadline that passes
/// after it was in authentication, not TLS.
struct Marked {
    inner: Connect,
    done: Arc<AtomicBool>,
}

impl TlsConnect<TcpStream> for Marked {
    type Stream = Stream<TcpStream>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        let done = self.done;
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            let stream = handshake.await?;
            done.store(true, Ordering::SeqCst);
            Ok(stream)
        })
    }
}

fn runtime() -> Result<Runtime, String> {
    // The current-thread runtime starts no thread; only spawn_blocking would, and nothing
    // here calls it.
    Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the client runtime: {e}"))
}

impl Conn {
    /// Tries each configured server, each address of it, and each login role, in order;
    /// the first connection that completes in time wins. Every failure, in order.
    pub fn open(target: &Target<'_>, tls: &Tls) -> Result<Self, Vec<Failure>> {
        let rt = runtime().map_err(|why| {
            vec![Failure::Failed {
                server: String::new(),
                phase: Phase::Connect,
                why,
                error: None,
            }]
        })?;
        let mut failures = Vec::new();
        let resolver = std::cell::OnceCell::new();
        for (host, port) in target.hosts {
            // Resolution takes its time from the first address's budget.
            let mut deadline = Instant::now() + target.connect_timeout;
            let addrs = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => {
                    let resolver = resolver.get_or_init(|| {
                        let _guard = rt.enter();
                        TokioResolver::builder_tokio().map(|b| b.build())
                    });
                    let server = format!("{host}:{port}");
                    match resolve(&rt, resolver, host, &server, deadline, target) {
                        Ok(addrs) => addrs,
                        Err(f) => {
                            failures.push(f);
                            continue;
                        }
                    }
                }
            };
            for ip in addrs {
                let server = format!("{host}:{port} ({ip})");
                for (i, user) in target.logins.iter().enumerate() {
                    let attempt = rt.block_on(attempt(
                        target, tls, host, ip, *port, user, &server, deadline,
                    ));
                    match attempt {
                        Ok(client) => {
                            return Ok(Self {
                                rt,
                                client,
                                server,
                                statement_timeout: target.statement_timeout,
                            });
                        }
                        // The server refused this role for this certificate: the next
                        // role may be the one it is mapped to, on the same budget.
                        Err(f) if f.login_refused() && i + 1 < target.logins.len() => {
                            failures.push(f);
                        }
                        Err(f) => {
                            failures.push(f);
                            break;
                        }
                    }
                }
                deadline = Instant::now() + target.connect_timeout;
            }
        }
        Err(failures)
    }

    /// Runs `f` on the connection within the statement deadline. A timeout leaves the
    /// connection unusable: the caller must drop it.
    pub fn call<T>(
        &mut self,
        f: impl AsyncFnOnce(&Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, Failure> {
        let deadline = Instant::now() + self.statement_timeout;
        let client = &self.client;
        // The timer is made inside the runtime, which it needs.
        match self
            .rt
            .block_on(async { timeout_at(deadline, f(client)).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Failed {
                server: self.server.clone(),
                phase: Phase::Call,
                why: with_causes(&e),
                error: Some(e),
            }),
            Err(_) => Err(Failure::Timeout {
                server: self.server.clone(),
                phase: Phase::Call,
                after: self.statement_timeout,
            }),
        }
    }

    /// Whether the connection has closed (the server went away).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// The addresses of `host`, from /etc/hosts and DNS, before `deadline`.
fn resolve(
    rt: &Runtime,
    resolver: &Result<TokioResolver, hickory_resolver::ResolveError>,
    host: &str,
    server: &str,
    deadline: Instant,
    target: &Target<'_>,
) -> Result<Vec<IpAddr>, Failure> {
    let failed = |why: String| Failure::Failed {
        server: server.to_string(),
        phase: Phase::Resolve,
        why,
        error: None,
    };
    let resolver = resolver
        .as_ref()
        .map_err(|e| failed(format!("cannot read the resolver's configuration: {e}")))?;
    match rt.block_on(async { timeout_at(deadline, resolver.lookup_ip(host)).await }) {
        Ok(Ok(found)) => {
            let addrs: Vec<IpAddr> = found.iter().collect();
            if addrs.is_empty() {
                Err(failed(format!("{host} has no address")))
            } else {
                Ok(addrs)
            }
        }
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(Failure::Timeout {
            server: server.to_string(),
            phase: Phase::Resolve,
            after: target.connect_timeout,
        }),
    }
}

/// One connection as `user` to `ip`, all of it before `deadline`; on success the
/// connection's driver runs on the runtime whenever the thread blocks on it.
#[allow(clippy::too_many_arguments)] // one attempt's whole description, used once
async fn attempt(
    target: &Target<'_>,
    tls: &Tls,
    host: &str,
    ip: IpAddr,
    port: u16,
    user: &str,
    server: &str,
    deadline: Instant,
) -> Result<Client, Failure> {
    let failed = |phase, why: String, error| Failure::Failed {
        server: server.to_string(),
        phase,
        why,
        error,
    };
    let late = |phase| Failure::Timeout {
        server: server.to_string(),
        phase,
        after: target.connect_timeout,
    };
    let stream = match timeout_at(deadline, TcpStream::connect(SocketAddr::new(ip, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(failed(Phase::Connect, e.to_string(), None)),
        Err(_) => return Err(late(Phase::Connect)),
    };
    let _ = stream.set_nodelay(true);
    let mut config = Config::new();
    config
        .host(host)
        .port(port)
        .dbname(target.dbname)
        .user(user)
        .ssl_mode(SslMode::Require)
        .application_name("twofactor")
        // The server's own limit too, for a client that is gone.
        .options(format!(
            "-c statement_timeout={}",
            target.statement_timeout.as_millis()
        ));
    let done = Arc::new(AtomicBool::new(false));
    let mut make = tls.clone();
    let inner = <Tls as MakeTlsConnect<TcpStream>>::make_tls_connect(&mut make, host)
        .map_err(|e| failed(Phase::Tls, e.to_string(), None))?;
    let marked = Marked {
        inner,
        done: Arc::clone(&done),
    };
    let phase = |done: &AtomicBool| {
        if done.load(Ordering::SeqCst) {
            Phase::Auth
        } else {
            Phase::Tls
        }
    };
    let (client, connection) = match timeout_at(deadline, config.connect_raw(stream, marked)).await
    {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            let phase = phase(&done);
            let why = with_causes(&e);
            let why = format!("{why}{}", auth_hint(&why));
            return Err(failed(phase, why, Some(e)));
        }
        Err(_) => return Err(late(phase(&done))),
    };
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away.
        let _ = connection.await;
    });
    if target.read_write_check {
        let read_only =
            match timeout_at(deadline, client.simple_query("SHOW transaction_read_only")).await {
                Ok(Ok(rows)) => rows.iter().any(|m| {
                    matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("on"))
                }),
                Ok(Err(e)) => return Err(failed(Phase::Check, with_causes(&e), Some(e))),
                Err(_) => return Err(late(Phase::Check)),
            };
        if read_only {
            return Err(Failure::ReadOnly {
                server: server.to_string(),
            });
        }
    }
    Ok(client)
}
