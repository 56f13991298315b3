//! `cargo run -p promql --example promqltest [-v]`: prints the conformance summary line
//! (and every failure with `-v`).

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let verbose = std::env::args().any(|a| a == "-v");
    let res = promql::promqltest::run_all().await;
    if verbose {
        for f in &res.failures {
            println!("{f}");
        }
    }
    println!("{}", res.summary());
}
