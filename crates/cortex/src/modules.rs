//! Wires the chosen roles into one process: one HTTP and one gRPC server,
//! one KV client, one ring view, one ingester client pool, one registry.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use ring::kv::KvClient;
use ring::{Lifecycler, Ring, INGESTER_RING_KEY};
use server::http::ReadyCheck;
use server::tenant::AuthConfig;
use server::{IngesterPool, Metrics};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::local_push::LocalFirstPusher;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(#[from] server::config::ConfigError),
    #[error("{0}")]
    Listen(#[from] std::io::Error),
    #[error("ring KV store: {0}")]
    Kv(#[from] ring::kv::KvError),
    #[error("ring: {0}")]
    Ring(#[from] ring::RingError),
    #[error("chunk store: {0}")]
    Store(#[from] storage::StoreError),
    #[error("ruler: {0}")]
    Ruler(#[from] ruler::RulerError),
    #[error("table-manager: {0}")]
    TableManager(#[from] storage::table_manager::TableManagerConfigError),
}

/// A started process (or in-process instance, in tests).
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics: Metrics,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Graceful stop: an ingester leaves the ring first, then servers drain.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Waits until the servers have stopped (after a signal or [`Running::stop`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stops on SIGTERM/SIGINT.
    pub fn stop_on_signal(&mut self) {
        if let Some(s) = self.stop.take() {
            tokio::spawn(async move {
                server::http::shutdown_signal().await;
                tracing::info!("received shutdown signal");
                let _ = s.send(());
            });
        }
    }
}

/// Starts the roles `cfg.target` names. `kv` overrides the configured ring
/// store (tests give each in-process cluster its own in-memory store).
pub async fn start(cfg: Config, kv: Option<Arc<dyn KvClient>>) -> Result<Running, StartError> {
    let roles = cfg.roles()?;
    let metrics = Metrics::new();
    let http_listener = server::http::bind(&cfg.server.http_addr()).await?;
    let grpc_listener = server::http::bind(&cfg.server.grpc_addr()).await?;
    let http_addr = http_listener.local_addr()?;
    let grpc_addr = grpc_listener.local_addr()?;

    let ring_cfg = cfg.ingester.lifecycler.ring.clone();
    // A query-frontend or table-manager alone has no use for the ring.
    let needs_ring = roles
        .iter()
        .any(|r| matches!(*r, "ingester" | "distributor" | "querier" | "ruler"));
    let kv = match kv {
        Some(kv) => kv,
        None if needs_ring => ring::kv::new_client(&ring_cfg.kvstore, &metrics).await?,
        None => ring::kv::InMemoryKv::shared("unused"),
    };
    let pool = IngesterPool::new(Duration::from_secs(5));
    // The chunk store (spec §4): ingesters flush into it, queriers read it, the table-manager
    // keeps its tables. Opened once per process: the embedded index is single-owner.
    let needs_store = roles.iter().any(|r| matches!(*r, "ingester" | "querier"));
    let (chunk_store, backends) = if needs_store {
        let (s, b) = storage::build_store(&cfg.storage, &metrics).await?;
        (Some(s), b)
    } else if roles.contains(&"table-manager") {
        let schema = cfg.storage.schema()?;
        (
            None,
            storage::config::Backends::open(&cfg.storage, &schema, &metrics).await?,
        )
    } else {
        (None, storage::config::Backends::default())
    };
    let mut table_manager_task: Option<JoinHandle<()>> = None;
    if roles.contains(&"table-manager") {
        let schema = cfg.storage.schema()?;
        let client: Option<Arc<dyn storage::table_manager::TableClient>> = if let Some(d) = &backends.dynamo {
            Some(d.clone())
        } else if cfg.table_manager.retention_deletes_enabled {
            // The embedded index creates a table on its first write, so creating
            // every period's table ahead of time (thousands of weekly tables from
            // a 1970 schema start) buys nothing; here the table-manager only
            // deletes tables past retention.
            backends
                .embedded
                .clone()
                .map(|e| Arc::new(e) as Arc<dyn storage::table_manager::TableClient>)
        } else {
            None
        };
        if let Some(client) = client {
            let tm = storage::table_manager::TableManager::new(cfg.table_manager.clone(), schema, client, &metrics)?;
            table_manager_task = Some(tm.spawn());
        }
    }
    let mut http = Router::new();
    let mut grpc = tonic::service::RoutesBuilder::default();
    let mut lifecycler: Option<Arc<Lifecycler>> = None;
    // This process's ingester and the address it advertises in the ring.
    let mut local_ingester: Option<(Arc<ingester::Ingester>, String)> = None;
    let mut ingester: Option<Arc<ingester::Ingester>> = None;

    if roles.contains(&"ingester") {
        let ing = ingester::Ingester::new(cfg.ingester.clone(), &metrics);
        if let Some(store) = &chunk_store {
            ing.set_chunk_store(store.clone());
        }
        grpc.add_service(ing.grpc_service());
        http = http.merge(ing.http_routes());
        let lc = Lifecycler::start(
            cfg.ingester.lifecycler.clone(),
            kv.clone(),
            INGESTER_RING_KEY,
            grpc_addr.to_string(),
            &metrics,
        )
        .await?;
        ing.set_lifecycler(lc.clone());
        local_ingester = Some((ing.clone(), lc.addr().to_string()));
        lifecycler = Some(lc);
        ingester = Some(ing);
    }
    let ring = Ring::start(ring_cfg, kv.clone(), INGESTER_RING_KEY, "ingester", &metrics).await?;
    if needs_ring {
        http = http.merge(ring.http_routes());
    }
    // The query-frontend (spec §7): in front of this process's querier, if it runs one.
    let frontend = match roles.contains(&"query-frontend") {
        true => {
            let f = query_frontend::Frontend::new(
                cfg.frontend.clone(),
                cfg.query_range.clone(),
                query_frontend::Limits {
                    max_query_length: cfg.storage.max_query_length.0,
                },
                &metrics,
            )?;
            http = http.merge(f.http_routes());
            if let Some(svc) = f.grpc_service(cfg.server.grpc_server_max_recv_msg_size) {
                grpc.add_service(svc);
            }
            Some(f)
        }
        false => None,
    };
    let mut querier_workers: Option<query_frontend::worker::Workers> = None;
    let mut distributor: Option<Arc<distributor::Distributor>> = None;
    if roles.contains(&"distributor") {
        // Pushes to this process's own ingester skip the loopback gRPC hop.
        let pusher: Arc<dyn distributor::IngesterPusher> = match &local_ingester {
            Some((ing, addr)) => Arc::new(LocalFirstPusher::new(addr.clone(), ing.clone(), pool.clone())),
            None => Arc::new(pool.clone()),
        };
        let d = distributor::Distributor::with_replica_picker(
            cfg.distributor.clone(),
            cfg.limits.clone(),
            Arc::new(ring.clone()),
            pusher,
            &metrics,
        );
        http = http.merge(d.http_routes());
        distributor = Some(d);
    }
    if roles.contains(&"querier") {
        let q = querier::Querier::new(
            cfg.querier.clone(),
            ring.clone(),
            pool.clone(),
            cfg.distributor.shard_by_all_labels,
            &metrics,
        );
        if let (Some(store), Some(ingesters)) = (&chunk_store, q.ingesters()) {
            ingesters.set_store(querier::store::StoreQuerier::new(
                store.clone(),
                cfg.querier.query_ingesters_within.as_millis(),
                cfg.querier.query_store_after.as_millis(),
            ));
        }
        // Behind this process's own frontend, the querier's API is reached only through the
        // queue; otherwise it is public, and also pulls from a remote frontend if one is set.
        match frontend.as_ref().and_then(|f| f.queue()) {
            Some(queue) => {
                querier_workers = Some(query_frontend::worker::spawn_local(
                    queue.clone(),
                    q.http_routes(),
                    cfg.frontend_worker.parallelism,
                ))
            }
            None => {
                http = http.merge(q.http_routes());
                if !cfg.frontend_worker.frontend_address.is_empty() {
                    querier_workers = Some(query_frontend::worker::start(&cfg.frontend_worker, q.http_routes()));
                }
            }
        }
    }

    let mut ruler_task: Option<(Arc<ruler::Ruler>, JoinHandle<()>)> = None;
    if roles.contains(&"ruler") {
        let (r, task) =
            crate::ruler_adapters::start_ruler(&cfg, &ring, &pool, chunk_store.clone(), distributor.clone(), &metrics)?;
        http = http.merge(r.http_routes());
        ruler_task = Some((r, task));
    }

    // The ingester's readiness covers its WAL replay (which runs while
    // /metrics already serves) and then its lifecycler's.
    let ready: ReadyCheck = {
        let (ing, fe) = (ingester.clone(), frontend.clone());
        Arc::new(move || {
            if let Some(ing) = &ing {
                ing.check_ready()?;
            }
            fe.as_ref().map_or(Ok(()), |f| f.check_ready())
        })
    };
    let http = server::http::router(
        http,
        &metrics,
        AuthConfig {
            enabled: cfg.auth_enabled,
        },
        server::config::to_yaml(&cfg),
        ready,
    );
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let grace = cfg.server.graceful_shutdown_timeout.0;
    let grpc_limits = server::grpc::GrpcServerLimits::from_config(&cfg.server);
    let leaving = lifecycler.clone();
    let stopping_ingester = ingester.clone();
    let stopping_frontend = frontend.clone();
    let shutdown = async move {
        let _ = stop_rx.await;
        // Queued requests are failed and idle querier streams end, so the gRPC server can drain.
        if let Some(f) = stopping_frontend {
            f.stop();
        }
        // Without a WAL, chunks are flushed to the store before leaving;
        // with one, the WAL is fsynced and kept for the next start.
        if let Some(ing) = stopping_ingester {
            ing.stop(grace).await;
        }
        // Leave the ring while still serving, so in-flight requests finish and
        // distributors stop choosing this ingester before it goes away.
        if let Some(lc) = leaving {
            lc.shutdown().await;
        }
    };
    tracing::info!(roles = ?roles, http = %http_addr, grpc = %grpc_addr, "Cortex started");
    let task = tokio::spawn(async move {
        if let Err(e) = server::http::serve(
            http_listener,
            http,
            grpc_listener,
            grpc.routes(),
            grpc_limits,
            shutdown,
            grace,
        )
        .await
        {
            tracing::error!(error = %e, "server error");
        }
        drop(ring);
        drop(querier_workers);
        if let Some(t) = table_manager_task {
            t.abort();
        }
        if let Some((r, t)) = ruler_task {
            t.abort();
            r.stop();
        }
        tracing::info!("Cortex stopped");
    });
    Ok(Running {
        http_addr,
        grpc_addr,
        metrics,
        stop: Some(stop_tx),
        task,
    })
}
