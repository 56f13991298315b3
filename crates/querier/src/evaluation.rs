//! PromQL evaluations run off the async workers.
//!
//! Each query parses, evaluates and drops its syntax tree on a thread of its own, whose
//! stack is sized from the expression's nesting ([`promql::stack_size_for`]), so a
//! 10,000-term expression neither overflows a worker's stack nor blocks a worker while
//! it computes. At most `-querier.max-concurrent` such threads run; further queries
//! wait for one (inside their timeout). A query whose client goes away or whose timeout
//! passes is canceled: the engine sees the flag between steps, storage reads are
//! abandoned, and the thread exits freeing the query's memory before its slot is reused.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::api::ApiError;
use crate::ingesters::TenantQueryable;
use crate::{Querier, Source};

/// One PromQL evaluation as the query endpoints request it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Evaluation {
    Instant { t: i64 },
    Range { start: i64, end: i64, step: i64 },
}

impl Evaluation {
    /// A parse error as Prometheus words it: `/query` names the parameter
    /// (`invalid parameter "query": 1:5: parse error: …`), `/query_range` does not.
    fn parse_failure(&self, e: promql::PromqlError) -> ApiError {
        match (e, self) {
            (promql::PromqlError::Parse(m), Evaluation::Instant { .. }) => {
                ApiError::bad_data(format!("invalid parameter \"query\": {m}"))
            }
            (e, _) => e.into(),
        }
    }
}

/// The bounded set of evaluation threads.
pub(crate) struct QueryThreads {
    slots: Arc<Semaphore>,
    /// `cortex_panics_total`: a bug in the engine answers 500, counted, instead of a
    /// dropped connection.
    panics: Counter,
}

impl QueryThreads {
    pub fn new(max_concurrent: usize, panics: Counter) -> Self {
        QueryThreads {
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            panics,
        }
    }

    /// One of the `-querier.max-concurrent` slots, for query work done without a thread of
    /// its own (remote read); `None` once the querier shuts down.
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slots.clone().acquire_owned().await.ok()
    }
}

/// Sets the query's cancellation flag and wakes its storage reads when the request is
/// dropped: the client disconnected, the timeout passed, or the answer was delivered
/// (when the flag no longer matters).
struct CancelOnDrop {
    cancel: promql::Cancellation,
    _wake: oneshot::Sender<()>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn timed_out() -> ApiError {
    ApiError::timeout("query timed out in query execution")
}

/// Evaluates `expr` for `tenant` within `timeout` (which includes waiting for a thread).
pub(crate) async fn evaluate(
    q: &Arc<Querier>,
    tenant: &str,
    expr: &str,
    timeout: Duration,
    what: Evaluation,
) -> Result<promql::Value, ApiError> {
    // Too deep is answered at once, without a thread; the bound sizes the thread's stack.
    let nesting = promql::check_nesting(expr).map_err(|e| what.parse_failure(e))?;
    let run = async {
        let permit = q
            .threads
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::internal("querier shutting down"))?;
        let cancel = promql::Cancellation::new();
        let (wake, woken) = oneshot::channel();
        let _cancel_on_drop = CancelOnDrop {
            cancel: cancel.clone(),
            _wake: wake,
        };
        let (answer, answered) = oneshot::channel();
        let job = Job {
            querier: q.clone(),
            tenant: tenant.to_string(),
            expr: expr.to_string(),
            timeout,
            what,
            cancel,
            woken,
        };
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("promql".into())
            .stack_size(promql::stack_size_for(nesting))
            .spawn(move || job.run(runtime, permit, answer))
            .map_err(|e| ApiError::internal(format!("cannot start a query thread: {e}")))?;
        answered
            .await
            .map_err(|_| ApiError::internal("query thread ended without an answer"))?
    };
    tokio::time::timeout(timeout, run).await.map_err(|_| timed_out())?
}

/// What a query thread needs, owned.
struct Job {
    querier: Arc<Querier>,
    tenant: String,
    expr: String,
    timeout: Duration,
    what: Evaluation,
    cancel: promql::Cancellation,
    woken: oneshot::Receiver<()>,
}

impl Job {
    fn run(
        self,
        runtime: tokio::runtime::Handle,
        _slot: OwnedSemaphorePermit,
        answer: oneshot::Sender<Result<promql::Value, ApiError>>,
    ) {
        let panics = self.querier.threads.panics.clone();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(self.evaluate())));
        let result = match outcome {
            Ok(r) => r,
            Err(_) => {
                panics.inc();
                Err(ApiError::internal("query evaluation failed unexpectedly"))
            }
        };
        // The requester may be gone; the result (and the slot) are dropped either way.
        let _ = answer.send(result);
    }

    async fn evaluate(self) -> Result<promql::Value, ApiError> {
        let Job {
            querier: q,
            tenant,
            expr,
            timeout,
            what,
            cancel,
            mut woken,
        } = self;
        let ast = promql::parse(&expr).map_err(|e| what.parse_failure(e))?;
        let tenant_view;
        let data: &dyn promql::Queryable = match &q.source {
            Source::Ingesters(ingesters) => {
                tenant_view = TenantQueryable {
                    ingesters,
                    tenant: &tenant,
                };
                &tenant_view
            }
            Source::Queryable(d) => d.as_ref(),
        };
        // The engine checks its deadline and the flag between steps; waking on `woken`
        // abandons a storage read in flight.
        let engine = q.engine.with_timeout(timeout).with_cancellation(cancel);
        let eval = async {
            match what {
                Evaluation::Instant { t } => engine.instant_expr(data, &ast, t).await,
                Evaluation::Range { start, end, step } => engine.range_expr(data, &ast, start, end, step).await,
            }
        };
        let result = tokio::select! {
            r = eval => r.map_err(ApiError::from),
            _ = &mut woken => Err(ApiError::canceled("query was canceled in query execution")),
        };
        // `ast` is dropped here, on this thread's stack: dropping a deep tree recurses too.
        drop(ast);
        result
    }
}
