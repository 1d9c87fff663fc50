//! Queues, exchange and bindings, through lapin: not on the hot path, and
//! lapin already knows every declare option and argument type.
//!
//! The bench owns the queues named `PREFIX.N` and the exchange `PREFIX.x`:
//! it purges them before a run (except --consume-only, which drains them)
//! and deletes them after (except --publish-only, which leaves the backlog
//! for the next run, and --keep-queues).

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::args::{ExchangeType, Mode, Plan};
use crate::conn::Target;
use crate::error::BenchError;

fn topo_err(during: impl Into<String>) -> impl FnOnce(lapin::Error) -> BenchError {
    let during = during.into();
    move |e| BenchError::Topology {
        during,
        message: e.to_string(),
    }
}

async fn open(target: &Target) -> Result<(Connection, Channel), BenchError> {
    let conn = Connection::connect(&target.uri, ConnectionProperties::default())
        .await
        .map_err(topo_err("connect"))?;
    let ch = conn
        .create_channel()
        .await
        .map_err(topo_err("channel.open"))?;
    Ok((conn, ch))
}

/// Declares (and purges or not, per mode) the queues, the exchange and the
/// bindings. Returns the ready messages of each queue after that: the
/// backlog a --consume-only run drains.
pub async fn setup(target: &Target, plan: &Plan) -> Result<Vec<u64>, BenchError> {
    let (conn, ch) = open(target).await?;
    let durable = !plan.args.no_durable_queue;
    let args: FieldTable = plan.queue_args.clone();
    let mut backlog = Vec::with_capacity(plan.queues.len());
    for q in &plan.queues {
        let declared = ch
            .queue_declare(
                q.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    ..QueueDeclareOptions::default()
                },
                args.clone(),
            )
            .await
            .map_err(topo_err(format!("queue.declare {q}")))?;
        let mut ready = u64::from(declared.message_count());
        if plan.mode != Mode::ConsumeOnly && ready > 0 {
            ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
                .await
                .map_err(topo_err(format!("queue.purge {q}")))?;
            ready = 0;
        }
        backlog.push(ready);
    }
    if let Some((x, kind)) = &plan.exchange {
        let kind = match kind {
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Topic => ExchangeKind::Topic,
        };
        ch.exchange_declare(
            x.as_str().into(),
            kind,
            ExchangeDeclareOptions {
                durable,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(topo_err(format!("exchange.declare {x}")))?;
        let key = plan.binding_key();
        for q in &plan.queues {
            ch.queue_bind(
                q.as_str().into(),
                x.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(topo_err(format!("queue.bind {q}")))?;
        }
    }
    let _ = conn.close(200, "setup done".into()).await;
    Ok(backlog)
}

/// Deletes what [`setup`] declared (not after --publish-only or with
/// --keep-queues).
pub async fn teardown(target: &Target, plan: &Plan) -> Result<(), BenchError> {
    if plan.mode == Mode::PublishOnly || plan.args.keep_queues {
        return Ok(());
    }
    let (conn, ch) = open(target).await?;
    for q in &plan.queues {
        ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .map_err(topo_err(format!("queue.delete {q}")))?;
    }
    if let Some((x, _)) = &plan.exchange {
        ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .map_err(topo_err(format!("exchange.delete {x}")))?;
    }
    let _ = conn.close(200, "teardown done".into()).await;
    Ok(())
}
