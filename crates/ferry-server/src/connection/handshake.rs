//! [`Handshake`]: the AMQP handshake up to connection.open: connection.start
//! / start-ok (SASL PLAIN and AMQPLAIN, loopback-only users), tune / tune-ok
//! (limits validated as RabbitMQ does, applied to the reader and the
//! writer), open (vhost, connection limit). It yields [`Opened`]: the
//! authenticated user and the negotiated parameters, which `Conn::open`
//! takes over (and answers with open-ok).

use super::reader::{ReadEnd, Reader};
use super::{bad, conn_method, unexpected_method};
use crate::error::AmqpError;
use crate::outbox::Outbox;
use crate::registry::{ConnEntry, ConnSlot};
use crate::writer::WriterParams;
use crate::Shared;
use ferry_amqp::amq_protocol::protocol::connection;
use ferry_amqp::frame::rabbit;
use ferry_amqp::{parse_sasl_response, AMQPClass, AMQPValue, Frame, ReplyCode, FRAME_MIN_SIZE};
use ferry_broker::VHost;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncRead;

/// One connection's handshake: what it talks through and to.
pub(super) struct Handshake<'a> {
    pub(super) shared: &'a Shared,
    pub(super) outbox: &'a Outbox,
    /// The writer's frame_max and heartbeat, set at tune-ok.
    pub(super) params: &'a WriterParams,
    /// Registry entry: gets the client properties.
    pub(super) entry: &'a ConnEntry,
    pub(super) peer: SocketAddr,
}

/// What a successful handshake established (connection.open accepted,
/// open-ok not sent yet).
pub(super) struct Opened {
    pub(super) user: String,
    /// The user has the `impersonator` tag (read at login).
    pub(super) impersonator: bool,
    /// Client capabilities: consumer_cancel_notify, connection.blocked.
    pub(super) cancel_notify: bool,
    pub(super) blocked_cap: bool,
    /// The client's channel_max from tune-ok.
    pub(super) channel_max: u16,
    pub(super) vhost: Arc<VHost>,
    /// Its vhost / user connection slot (given back when dropped).
    pub(super) slot: ConnSlot,
}

/// The next connection method of the handshake. Before tune-ok
/// (`tuned` false) anything else refuses the connection without a word;
/// after it (RabbitMQ's "opening" state) it is answered with
/// connection.close.
async fn expect<R: AsyncRead + Unpin>(
    r: &mut Reader<R>,
    tuned: bool,
) -> Result<connection::AMQPMethod, ReadEnd> {
    loop {
        let frame = match r.frame().await {
            Ok(f) => f,
            Err(ReadEnd::Tick) => continue,
            Err(ReadEnd::Bad(_) | ReadEnd::Fatal(_)) if !tuned => {
                return Err(ReadEnd::Refused(None))
            }
            Err(end) => return Err(end),
        };
        match frame {
            Frame::Heartbeat { channel: 0 } => continue,
            Frame::Method {
                channel: 0,
                method: AMQPClass::Connection(m),
            } => return Ok(m),
            _ if !tuned => return Err(ReadEnd::Refused(None)),
            Frame::Method { channel: 0, method } => {
                return Err(ReadEnd::Bad(unexpected_method("opening", &method)))
            }
            _ => {
                let frame_type = r.last.first().copied().unwrap_or(0);
                return Err(ReadEnd::Bad(AmqpError::new(
                    ReplyCode::UNEXPECTED_FRAME,
                    rabbit::unexpected_frame_detail(frame_type, r.last_payload()),
                )));
            }
        }
    }
}

impl Handshake<'_> {
    /// Runs the handshake up to an accepted connection.open. Sets the
    /// reader's frame_max and heartbeat deadline at tune-ok.
    pub(super) async fn run<R: AsyncRead + Unpin>(
        self,
        r: &mut Reader<R>,
    ) -> Result<Opened, ReadEnd> {
        let peer = self.peer;
        let props = ferry_amqp::server_properties(
            "Ferry",
            env!("CARGO_PKG_VERSION"),
            &ferry_amqp::Capabilities::default(),
        );
        self.outbox.method(0, ferry_amqp::connection_start(props));
        let connection::AMQPMethod::StartOk(start_ok) = expect(r, false).await? else {
            return Err(ReadEnd::Refused(None));
        };
        let mut auth_failure_close = false;
        let (mut cancel_notify, mut blocked_cap) = (false, false);
        self.entry
            .set_client_properties(&start_ok.client_properties);
        if let Some(AMQPValue::FieldTable(caps)) =
            start_ok.client_properties.inner().get("capabilities")
        {
            let has = |k: &str| matches!(caps.inner().get(k), Some(AMQPValue::Boolean(true)));
            cancel_notify = has("consumer_cancel_notify");
            blocked_cap = has("connection.blocked");
            auth_failure_close = has("authentication_failure_close");
        }
        let mechanism = start_ok.mechanism.as_str().to_string();
        // An unknown mechanism or a malformed response: refused without a
        // word even to a client with authentication_failure_close, as
        // RabbitMQ does.
        let Ok(creds) = parse_sasl_response(&mechanism, start_ok.response.as_bytes()) else {
            tracing::warn!(%peer, mechanism, "bad SASL mechanism or response");
            return Err(ReadEnd::Refused(None));
        };
        let auth = self
            .shared
            .broker
            .users()
            .authenticate(&creds.username, &creds.password, peer.ip().is_loopback())
            .map(|u| (u.name.clone(), u.has_tag("impersonator")));
        let (user, impersonator) = match auth {
            // Tags are read at login, as RabbitMQ's channel keeps the
            // login's user record: a later tag change applies to new
            // connections.
            Ok(login) => login,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "login refused");
                // A client that cannot take connection.close during the
                // handshake just sees the socket close.
                return Err(ReadEnd::Refused(auth_failure_close.then(|| {
                    AmqpError::new(
                        ReplyCode::ACCESS_REFUSED,
                        format!("Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."),
                    )
                })));
            }
        };
        let cfg = &self.shared.config;
        self.outbox.method(
            0,
            conn_method(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: cfg.channel_max,
                frame_max: cfg.frame_max,
                heartbeat: cfg.heartbeat,
            })),
        );
        let connection::AMQPMethod::TuneOk(t) = expect(r, false).await? else {
            return Err(ReadEnd::Refused(None));
        };
        // RabbitMQ refuses values below the minimum or above its own
        // (0 = "no limit" is above any limit).
        let negotiable = |min: u32, server: u32, client: u32| {
            !(client != 0 && client < min || server != 0 && (client == 0 || client > server))
        };
        if !negotiable(FRAME_MIN_SIZE, cfg.frame_max, t.frame_max)
            || !negotiable(1, u32::from(cfg.channel_max), u32::from(t.channel_max))
        {
            tracing::warn!(%peer, frame_max = t.frame_max, channel_max = t.channel_max, "tune-ok refused");
            return Err(ReadEnd::Refused(None));
        }
        let frame_max = match t.frame_max {
            0 => cfg.frame_max,
            n => n,
        };
        r.frame_max = frame_max;
        self.params.frame_max.store(frame_max, Ordering::Relaxed);
        self.params
            .heartbeat
            .store(u32::from(t.heartbeat), Ordering::Relaxed);
        r.idle_limit = (t.heartbeat > 0).then(|| Duration::from_secs(u64::from(t.heartbeat) * 2));
        let open = match expect(r, true).await? {
            connection::AMQPMethod::Open(open) => open,
            other => {
                return Err(ReadEnd::Bad(unexpected_method(
                    "opening",
                    &conn_method(other),
                )))
            }
        };
        let max = self.shared.config.max_connections;
        if max > 0 && self.shared.live.load(Ordering::Acquire) > max {
            return Err(bad(
                ReplyCode::NOT_ALLOWED,
                format!("connection refused: node connection limit ({max}) is reached"),
            ));
        }
        // RabbitMQ 3.10: "vhost X not found" or "access to vhost 'X'
        // refused for user 'U'", both 530 NOT_ALLOWED on connection.open.
        let broker = &self.shared.broker;
        let name = open.virtual_host.as_str();
        // Held from here: dropped (given back) if the open fails below.
        let slot = match super::limits::reserve_connection(
            broker,
            &self.shared.registry,
            &user,
            name,
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%peer, user = %user, vhost = name, error = %e, "connection limit reached");
                return Err(ReadEnd::Bad(e));
            }
        };
        let vhost = broker
            .check_vhost_access(&user, name)
            .and_then(|()| broker.vhost(name));
        let vhost = match vhost {
            Ok(v) => v,
            Err(e) => {
                tracing::info!(%peer, user = %user, vhost = name, error = %e, "vhost access refused");
                return Err(ReadEnd::Bad(
                    AmqpError::new(ReplyCode::NOT_ALLOWED, e.to_string()).on(10, 40),
                ));
            }
        };
        Ok(Opened {
            user,
            impersonator,
            cancel_notify,
            blocked_cap,
            channel_max: t.channel_max,
            vhost,
            slot,
        })
    }
}
