//! Runs Prometheus's promqltest conformance files against our engine.

/// Raise this as conformance improves; the test fails if we regress below it.
const PASS_FLOOR: usize = 579;

#[tokio::test]
async fn promqltest_conformance() {
    let res = promql::promqltest::run_all().await;
    for f in &res.failures {
        eprintln!("{f}");
    }
    println!("{}", res.summary());
    assert!(
        res.passed >= PASS_FLOOR,
        "promqltest regressed: {} passed, floor is {PASS_FLOOR}",
        res.passed
    );
}
