//! `cargo run -p promql --example promqlfile FILE…`: runs promqltest files and prints every failure.

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for path in std::env::args().skip(1) {
        let content = std::fs::read_to_string(&path).expect("readable test file");
        let res = promql::promqltest::run_file(&path, &content).await;
        for f in &res.failures {
            println!("{f}");
        }
        println!("{path}: {} passed, {} failed", res.passed, res.failed);
    }
}
