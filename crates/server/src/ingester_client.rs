//! gRPC clients to ingesters, one lazily-connected channel per address,
//! shared by the distributor (Push) and the querier (QueryStream & co.).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use proto::cortex::ingester_client::IngesterClient;
use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message we send or accept from an ingester (Cortex: 100 MiB send, 16 MiB recv; we allow 100 MiB both ways).
pub const MAX_MESSAGE_SIZE: usize = 100 << 20;

/// A pool of ingester clients keyed by `host:port`.
#[derive(Clone, Default)]
pub struct IngesterPool {
    clients: Arc<Mutex<HashMap<String, IngesterClient<Channel>>>>,
    connect_timeout: Option<Duration>,
}

impl IngesterPool {
    pub fn new(connect_timeout: Duration) -> Self {
        IngesterPool {
            clients: Default::default(),
            connect_timeout: Some(connect_timeout),
        }
    }

    /// The client for `addr`, created (without connecting yet) on first use.
    pub fn get(&self, addr: &str) -> Result<IngesterClient<Channel>, crate::HttpError> {
        let mut clients = self.clients.lock();
        if let Some(c) = clients.get(addr) {
            return Ok(c.clone());
        }
        let uri = if addr.contains("://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let mut ep = Endpoint::from_shared(uri)
            .map_err(|e| crate::HttpError::internal(format!("bad ingester address {addr:?}: {e}")))?
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if let Some(t) = self.connect_timeout {
            ep = ep.connect_timeout(t);
        }
        let client = IngesterClient::new(ep.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE);
        clients.insert(addr.to_string(), client.clone());
        Ok(client)
    }

    /// Forgets clients for addresses no longer in the ring.
    pub fn retain(&self, live: impl Fn(&str) -> bool) {
        self.clients.lock().retain(|a, _| live(a));
    }
}
