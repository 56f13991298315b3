//! The Cortex binaries. `cortex` runs any set of roles in one process
//! (`-target=all` by default, on embedded defaults); `distributor`,
//! `ingester` and `querier` are the same program with the target fixed and
//! Cortex's own defaults.
//!
//! - [`config`]: the one config tree and flag table.
//! - [`cortex_yaml`]: Cortex v1.x config files, keys moved, accepted with a warning, or refused.
//! - [`modules`]: wiring roles, servers and the ring together.
//! - [`ruler_adapters`]: the ruler's reader (querier) and writer (distributor).
//! - [`local_push`]: distributor → same-process ingester without loopback gRPC.
//! - [`verify`]: `-config.verify`, check a command line without starting.
//! - [`flag_reference`]: docs/configuration.md, generated from the flag table.

pub mod config;
pub mod cortex_yaml;
pub mod flag_reference;
pub mod local_push;
pub mod modules;
pub mod ruler_adapters;
pub mod verify;

use std::process::ExitCode;

pub use config::Config;
pub use modules::{start, Running};

/// Parses the command line over `base`, starts, and runs until SIGTERM/SIGINT.
pub fn main_with(base: Config) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let loaded = verify::take_flag(args).and_then(|(verify, args)| Ok((verify, config::load_with_notes(base, &args)?)));
    let (cfg, notes) = match loaded {
        Ok((false, c)) => c,
        Ok((true, (c, notes))) => {
            // Before the YAML on stdout, so a reader sees what was ignored.
            for n in &notes {
                eprintln!("{}: {}", if n.warn { "warning" } else { "info" }, n.message);
            }
            return match verify::verify(&c) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error loading config: {e}");
                    ExitCode::from(1)
                }
            };
        }
        Err(server::config::ConfigError::Help(text)) => {
            println!("{text}{}", verify::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error loading config: {e}");
            return ExitCode::from(1);
        }
    };
    server::http::init_logging(&cfg.server);
    for n in &notes {
        if n.warn {
            tracing::warn!("{}", n.message);
        } else {
            tracing::info!("{}", n.message);
        }
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(async move {
        match modules::start(cfg, None).await {
            Ok(mut running) => {
                running.stop_on_signal();
                running.wait().await;
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "failed to start");
                eprintln!("error starting: {e}");
                ExitCode::from(1)
            }
        }
    });
    // Servers have drained; don't let a blocking task still in flight (a
    // store or table operation) hold the exit back.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    code
}
