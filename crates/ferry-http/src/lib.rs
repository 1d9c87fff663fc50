//! # ferry-http: the management HTTP API and Prometheus metrics
//!
//! Owns the RabbitMQ-compatible management API (`/api/...`, basic auth with
//! broker users and their tags, RabbitMQ 3.10's paths, JSON shapes and
//! status codes, so `rabbitmqadmin` and existing scripts work) and the
//! Prometheus endpoint (`/metrics` on its own listener). Message rates are
//! computed here by sampling the queues' counters.
//!
//! Must not: hold broker rules (declares, routing, users go through
//! ferry-broker's `VHost` / `Broker` functions, exactly what AMQP clients
//! reach), touch the AMQP wire (connections are seen and closed through
//! ferry-server's registry), or answer user input with a 500.
//!
//! ```text
//! HTTP ─▶ auth (basic, tags) ─▶ handler ─▶ ferry-broker (VHost, Broker)
//!                                      └──▶ ferry-server (Registry, alarms)
//! sampler task (5 s) ─▶ queue counters ─▶ RateTable ─▶ *_details.rate
//! ```
//!
//! One file per resource family: `overview`, `queues`, `exchanges`,
//! `bindings`, `connections` (and channels, consumers), `access` (users,
//! vhosts, permissions), `limits` (vhost and user limits, with their own
//! routes), `policies` (policies and operator policies),
//! `definitions` (also the boot-time
//! `load_definitions` import), `messages` (publish / get), `metrics`;
//! `sources` is the one view of queues and streams they all count with.

mod access;
pub mod auth;
mod bindings;
mod common;
mod connections;
pub mod definitions;
pub mod error;
mod exchanges;
pub mod json;
mod limits;
mod messages;
pub mod metrics;
mod overview;
pub mod policies;
pub mod query;
mod queues;
pub mod sources;
pub mod state;
mod ui;

pub use definitions::import_document;
pub use error::{ApiError, ApiResult};
pub use state::{Ctx, NodeInfo};

use axum::routing::{get, post};
use axum::Router;
use ferry_broker::Broker;
use ferry_server::alarms::Alarms;
use ferry_server::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Management API address (None = off).
    pub api_listen: Option<SocketAddr>,
    /// Prometheus address (None = off).
    pub metrics_listen: Option<SocketAddr>,
    /// Memory high watermark in bytes (0 = 40% of RAM), for /api/nodes.
    pub memory_limit: u64,
    /// Free-disk low watermark in bytes, for /api/nodes.
    pub disk_free_limit: u64,
    /// The AMQP listener (for /api/overview's listeners).
    pub amqp_listen: SocketAddr,
    /// Serve the management API over TLS with this configuration.
    pub tls: Option<Arc<ferry_server::tls::TlsConfig>>,
    /// The AMQP front end's direct reply-to consumers: a publish to the
    /// default exchange with a reply name as routing key reaches one
    /// (`ferry_server::Server::replies`; None = such publishes reach none).
    pub replies: Option<Arc<ferry_server::channel::reply_to::Replies>>,
    /// This node's name (`node_name`).
    pub node_name: String,
    /// The cluster this node is a member of (None: a single node).
    pub cluster: Option<ferry_cluster::node::ClusterNode>,
}

/// Errors starting the listeners.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// A listener could not bind.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// The running HTTP listeners.
#[derive(Debug)]
pub struct HttpServer {
    api_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// "ferry@HOSTNAME", RabbitMQ's node name shape: the default `node_name`.
pub fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("ferry@{host}")
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The management API's routes.
pub fn api_router(ctx: Ctx) -> Router {
    use connections as c;
    let api = Router::new()
        .route("/api/overview", get(overview::overview))
        .route("/api/nodes", get(overview::nodes))
        .route(
            "/api/nodes/{name}",
            get(overview::node).delete(overview::forget_node),
        )
        .route("/api/cluster/leave", post(overview::leave_cluster))
        .route("/api/cluster/join", post(overview::join_cluster))
        .route(
            "/api/queues/quorum/replicas/on/{node}/grow",
            post(overview::grow_replicas),
        )
        .route(
            "/api/queues/quorum/replicas/on/{node}/shrink",
            axum::routing::delete(overview::shrink_replicas),
        )
        .route("/api/rebalance/queues", post(overview::rebalance_queues))
        .route("/api/health/checks/alarms", get(overview::alarms))
        .route("/api/health/checks/local-alarms", get(overview::alarms))
        .route(
            "/api/health/checks/node-is-quorum-critical",
            get(overview::quorum_critical),
        )
        .route("/api/whoami", get(overview::whoami))
        .route("/api/extensions", get(overview::extensions))
        .route("/api/queues", get(queues::list))
        .route("/api/queues/{vhost}", get(queues::list))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queues::show)
                .put(queues::declare)
                .delete(queues::delete),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(queues::purge),
        )
        .route("/api/queues/{vhost}/{name}/get", post(messages::get))
        .route("/api/queues/{vhost}/{name}/bindings", get(queues::bindings))
        .route("/api/exchanges", get(exchanges::list))
        .route("/api/exchanges/{vhost}", get(exchanges::list))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchanges::show)
                .put(exchanges::declare)
                .delete(exchanges::delete),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/publish",
            post(messages::publish),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(exchanges::bindings_source),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(exchanges::bindings_destination),
        )
        .route("/api/bindings", get(bindings::list))
        .route("/api/bindings/{vhost}", get(bindings::list))
        .route(
            "/api/bindings/{vhost}/e/{source}/{dtype}/{dest}",
            get(bindings::list_between).post(bindings::create),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{dtype}/{dest}/{props}",
            get(bindings::show).delete(bindings::delete),
        )
        .route("/api/connections", get(c::list))
        .route("/api/connections/{name}", get(c::show).delete(c::close))
        .route("/api/connections/{name}/channels", get(c::conn_channels))
        .route("/api/channels", get(c::channels))
        .route("/api/channels/{name}", get(c::channel))
        .route("/api/consumers", get(c::consumers))
        .route("/api/consumers/{vhost}", get(c::consumers))
        .route("/api/vhosts", get(access::vhosts))
        .route(
            "/api/vhosts/{name}",
            get(access::vhost)
                .put(access::put_vhost)
                .delete(access::delete_vhost),
        )
        .route(
            "/api/vhosts/{name}/permissions",
            get(access::vhost_permissions),
        )
        .route("/api/vhosts/{name}/connections", get(c::list))
        .route("/api/vhosts/{name}/channels", get(c::channels))
        .route("/api/users", get(access::users))
        .route(
            "/api/users/{name}",
            get(access::user)
                .put(access::put_user)
                .delete(access::delete_user),
        )
        .route(
            "/api/users/{name}/permissions",
            get(access::user_permissions),
        )
        .route("/api/permissions", get(access::permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(access::permission)
                .put(access::put_permission)
                .delete(access::delete_permission),
        )
        .route(
            "/api/definitions",
            get(definitions::export).post(definitions::import),
        )
        .route(
            "/api/definitions/{vhost}",
            get(definitions::export_vhost).post(definitions::import_vhost),
        )
        .merge(limits::routes())
        .merge(policies::routes())
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            auth::authenticate,
        ));
    Router::new()
        .merge(api)
        .merge(ui::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(error::json_rejections))
        .with_state(ctx)
}

/// The metrics listener's routes.
pub fn metrics_router(ctx: Ctx) -> Router {
    Router::new()
        .route("/metrics", get(metrics::metrics))
        .fallback(not_found)
        .with_state(ctx)
}

async fn bind(a: SocketAddr) -> Result<(TcpListener, SocketAddr), HttpError> {
    let l = TcpListener::bind(a)
        .await
        .map_err(|e| HttpError::Bind(a, e))?;
    let local = l.local_addr().map_err(|e| HttpError::Bind(a, e))?;
    Ok((l, local))
}

fn serve(
    l: TcpListener,
    r: Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let app = r.into_make_service_with_connect_info::<SocketAddr>();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(l, app).with_graceful_shutdown(shutdown).await {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    })
}

/// HTTPS: TLS handshake per connection (bounded), then HTTP/1 on the
/// stream. In-flight connections end with the process.
fn serve_tls(
    l: TcpListener,
    r: Router,
    tls: Arc<ferry_server::tls::TlsConfig>,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (tcp, peer) = tokio::select! {
                a = l.accept() => match a {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return,
            };
            let acceptor = acceptor.clone();
            let svc = r
                .clone()
                .layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
                let stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let io = hyper_util::rt::TokioIo::new(stream);
                let svc = hyper_util::service::TowerToHyperService::new(svc);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "HTTPS connection ended");
                }
            });
        }
    })
}

impl HttpServer {
    /// Binds the configured listeners and starts serving (and sampling
    /// rates).
    pub async fn start(
        broker: Arc<Broker>,
        registry: Arc<Registry>,
        alarms: watch::Receiver<Alarms>,
        cfg: HttpConfig,
    ) -> Result<HttpServer, HttpError> {
        let mem_limit = ferry_server::memory_limit(cfg.memory_limit);
        let ctx = Ctx {
            broker,
            registry,
            alarms,
            node: Arc::new(NodeInfo {
                name: cfg.node_name.clone(),
                mem_limit,
                disk_free_limit: cfg.disk_free_limit,
                amqp_listen: cfg.amqp_listen,
            }),
            started: Instant::now(),
            rates: Arc::default(),
            replies: cfg.replies.clone(),
            cluster: cfg.cluster.clone(),
        };
        if let Some(c) = &cfg.cluster {
            let c2 = ctx.clone();
            c.set_stats(Arc::new(move || {
                bytes::Bytes::from(
                    serde_json::to_vec(&overview::stats_json(&c2)).unwrap_or_default(),
                )
            }));
        }
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut api_addr = None;
        if let Some(a) = cfg.api_listen {
            let (l, local) = bind(a).await?;
            api_addr = Some(local);
            let router = api_router(ctx.clone());
            tasks.push(match cfg.tls.clone() {
                Some(tls) => serve_tls(l, router, tls, stop_rx.clone()),
                None => serve(l, router, stop_rx.clone()),
            });
            tasks.push(tokio::spawn(state::sampler(ctx.clone(), stop_rx.clone())));
            tracing::info!(http = %local, tls = cfg.tls.is_some(), "management API listening");
        }
        let mut metrics_addr = None;
        if let Some(a) = cfg.metrics_listen {
            let (l, local) = bind(a).await?;
            metrics_addr = Some(local);
            tasks.push(serve(l, metrics_router(ctx.clone()), stop_rx.clone()));
            tracing::info!(metrics = %local, "Prometheus metrics listening");
        }
        Ok(HttpServer {
            api_addr,
            metrics_addr,
            stop,
            tasks,
        })
    }

    /// The management API's bound address.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// The metrics listener's bound address.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops the listeners (in-flight requests finish, bounded).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
    }
}
