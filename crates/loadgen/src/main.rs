//! `loadgen`: sends node-exporter-like remote-write load and reports
//! `sent S samples in T s: R samples/s` plus latency percentiles. Exits 1 if
//! any request was not answered 2xx.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use loadgen::{args::USAGE, encode_requests, generate_series, run, Args, ArgsError};

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(ArgsError::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if args.free_port {
        match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => {
                println!("{}", a.port());
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("loadgen: no free port: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let per_round = args.requests_per_round();
    if args.concurrency > per_round {
        eprintln!(
            "loadgen: --concurrency {} is more than the {per_round} requests of one round (--series / --batch): \
             a series' samples could arrive out of order; lower it or raise --series",
            args.concurrency
        );
        return ExitCode::from(2);
    }

    let prep = Instant::now();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let series = generate_series(args.series, args.seed);
    let requests = encode_requests(
        &series,
        args.samples_per_series,
        args.batch,
        args.interval.as_millis() as i64,
        now_ms,
        args.seed,
    );
    drop(series);
    let bytes: usize = requests.iter().map(|r| r.body.len()).sum();
    eprintln!(
        "loadgen: {} series x {} samples in {} requests ({:.1} MiB compressed) encoded in {:.1}s; sending to {} with {} in flight",
        args.series,
        args.samples_per_series,
        requests.len(),
        bytes as f64 / (1 << 20) as f64,
        prep.elapsed().as_secs_f64(),
        args.url,
        args.concurrency
    );

    // One thread: the generator must take as little CPU as possible away from
    // the server it measures (the bodies are ready, it only writes bytes).
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = rt.block_on(run(
        &args.url,
        args.tenant.clone(),
        args.concurrency,
        args.timeout,
        Arc::new(requests),
    ));
    match report {
        Ok(r) => {
            println!("{r}");
            if r.errors > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
