//! `frontend.Frontend/Process` on the frontend (spec §7.3): each querier stream asks for the
//! querier's ID, then carries one queued request at a time and exactly one response back. A
//! caller that goes away while its request runs closes the stream — that is what cancels the
//! work on the querier.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use proto::frontend::frontend_server::{Frontend as FrontendRpc, FrontendServer};
use proto::frontend::{
    ClientToFrontend, FrontendToClient, NotifyClientShutdownRequest, NotifyClientShutdownResponse, Type,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use crate::error::FrontendError;
use crate::queue::RequestQueue;

pub struct FrontendService {
    pub queue: Arc<RequestQueue>,
}

pub fn server(queue: Arc<RequestQueue>, max_msg_size: usize) -> FrontendServer<FrontendService> {
    FrontendServer::new(FrontendService { queue })
        .max_decoding_message_size(max_msg_size)
        .max_encoding_message_size(max_msg_size)
}

type ToQuerier = Pin<Box<dyn Stream<Item = Result<FrontendToClient, Status>> + Send>>;

#[tonic::async_trait]
impl FrontendRpc for FrontendService {
    type ProcessStream = ToQuerier;

    async fn process(&self, request: Request<Streaming<ClientToFrontend>>) -> Result<Response<ToQuerier>, Status> {
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(serve_querier(self.queue.clone(), inbound, tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn notify_client_shutdown(
        &self,
        _request: Request<NotifyClientShutdownRequest>,
    ) -> Result<Response<NotifyClientShutdownResponse>, Status> {
        // The querier's streams close right after; their end unregisters it.
        Ok(Response::new(NotifyClientShutdownResponse {}))
    }
}

async fn serve_querier(
    queue: Arc<RequestQueue>,
    mut inbound: Streaming<ClientToFrontend>,
    tx: mpsc::Sender<Result<FrontendToClient, Status>>,
) {
    let ask_id = FrontendToClient {
        r#type: Type::GetId as i32,
        ..Default::default()
    };
    if tx.send(Ok(ask_id)).await.is_err() {
        return;
    }
    let id = match inbound.message().await {
        Ok(Some(m)) if !m.client_id.is_empty() => m.client_id,
        _ => return,
    };
    let _connection = queue.register_querier(&id);
    let mut last_slot = None;
    loop {
        let next = tokio::select! {
            q = queue.next(&id, &mut last_slot) => q,
            // The querier went away while idle.
            _ = tx.closed() => return,
        };
        let Some(mut q) = next else { return };
        let msg = FrontendToClient {
            http_request: Some(std::mem::take(&mut q.request)),
            r#type: Type::HttpRequest as i32,
            stats_enabled: false,
        };
        if tx.send(Ok(msg)).await.is_err() {
            let _ = q
                .reply
                .send(Err(FrontendError::Unavailable(format!("querier {id} disconnected"))));
            return;
        }
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(m)) => {
                    let resp = m.http_response.unwrap_or_default();
                    let _ = q.reply.send(Ok(resp));
                }
                Ok(None) | Err(_) => {
                    let _ = q.reply.send(Err(FrontendError::Unavailable(format!(
                        "querier {id} went away while processing the request"
                    ))));
                    return;
                }
            },
            // The caller went away: ending the stream cancels the querier's work.
            _ = q.reply.closed() => return,
        }
    }
}
