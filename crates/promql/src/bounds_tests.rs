//! The engine's bounds: work refused before it is done, deadlines and cancellation seen
//! during evaluation, time arithmetic that cannot wrap, and deep expressions evaluated on
//! a stack of the size [`stack_size_for`] promises.

use std::future::Future;
use std::time::{Duration, Instant};

use model::{Labels, Sample};

use crate::promqltest::MemStorage;
use crate::test_alloc::largest_allocation;
use crate::{nesting_bound, stack_size_for, Cancellation, Engine, EngineOpts, PromqlError, Value, MAX_NESTING};

fn block_on<F: Future>(rt: &tokio::runtime::Runtime, f: F) -> F::Output {
    rt.block_on(f)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn engine(max_samples: usize) -> Engine {
    Engine::new(EngineOpts {
        max_samples,
        ..EngineOpts::default()
    })
}

/// `m{job="a"}`: one sample per second over [0, secs).
fn per_second(secs: i64) -> MemStorage {
    let mut st = MemStorage::new();
    st.append(
        Labels::from_pairs([("__name__", "m"), ("job", "a")]),
        (0..secs).map(|i| Sample {
            t: i * 1000,
            v: i as f64,
        }),
    );
    st
}

#[test]
fn huge_subqueries_are_refused_before_any_buffer_is_sized_by_their_steps() {
    let rt = runtime();
    let st = per_second(600);
    let e = engine(50_000_000);
    for q in [
        // The query from the issue: 3.15e12 steps, a 25 TB buffer.
        "count_over_time(vector(1)[100y:1ms])",
        // 10^10 steps.
        "count_over_time(vector(1)[10000000s:1ms])",
        "max_over_time(rate(m[5m])[100y:1ms])",
        "sum(count_over_time((m + 1)[100y:1ms] offset -100y))",
        "count_over_time(vector(1)[100y:1ms] @ 100)",
        // Inside another subquery, whose own steps are few.
        "max_over_time(count_over_time(vector(1)[100y:1ms])[10m:1m])",
    ] {
        let started = Instant::now();
        let (r, largest) = largest_allocation(|| block_on(&rt, e.instant(&st, q, 600_000)));
        assert!(matches!(r, Err(PromqlError::TooManySamplesInSubquery)), "{q}: {r:?}");
        assert_eq!(
            r.unwrap_err().to_string(),
            "query processing would load too many samples into memory in subquery"
        );
        assert!(largest < 1 << 20, "{q}: allocated {largest} bytes at once");
        assert!(
            // Refused up front, not after running: generous for a busy debug build.
            started.elapsed() < Duration::from_secs(10),
            "{q}: {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn subquery_steps_are_charged_against_what_is_left_of_the_budget() {
    let rt = runtime();
    let st = per_second(600);
    // The matrix selector loads 600 samples and the left side keeps 1 point; inside the
    // subquery `1` and `vector(1)` hold 901 values each. Its 901 steps fit in 1,400 but
    // not in the 799 left of 1,400 - 601.
    let q = "sum_over_time(m[10m]) + on() count_over_time(vector(1)[900ms:1ms])";
    let ok = block_on(&rt, engine(600 + 1 + 901 + 901).instant(&st, q, 599_000));
    assert!(ok.is_ok(), "{ok:?}");
    let one_less = block_on(&rt, engine(600 + 1 + 901 + 900).instant(&st, q, 599_000));
    assert!(matches!(one_less, Err(PromqlError::TooManySamples)), "{one_less:?}");
    let refused = block_on(&rt, engine(1_400).instant(&st, q, 599_000));
    assert!(
        matches!(refused, Err(PromqlError::TooManySamplesInSubquery)),
        "{refused:?}"
    );
}

#[test]
fn range_queries_with_more_steps_than_the_budget_are_refused_up_front() {
    let rt = runtime();
    let st = MemStorage::new();
    let (r, largest) = largest_allocation(|| block_on(&rt, engine(1_000).range(&st, "1", 0, 1_000_000, 1)));
    assert!(matches!(r, Err(PromqlError::TooManySamples)), "{r:?}");
    assert!(largest < 1 << 20, "allocated {largest} bytes at once");
    // Right at the budget the same query answers.
    let r = block_on(&rt, engine(1_001).range(&st, "1", 0, 1_000, 1));
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn range_function_output_is_charged_while_it_is_built() {
    let rt = runtime();
    // One raw sample, but a 1h window puts it in 3,600 one-second steps.
    let mut st = MemStorage::new();
    st.append(
        Labels::from_pairs([("__name__", "m"), ("job", "a")]),
        [Sample { t: 0, v: 1.0 }],
    );
    let q = "count_over_time(m[1h])";
    let r = block_on(&rt, engine(1_000).range(&st, q, 0, 3_599_000, 1_000));
    assert!(matches!(r, Err(PromqlError::TooManySamples)), "{r:?}");
    let Ok(Value::Matrix(m)) = block_on(&rt, engine(10_000).range(&st, q, 0, 3_599_000, 1_000)) else {
        panic!("under the limit the query answers")
    };
    assert_eq!(m[0].samples.len(), 3_600);
}

#[test]
fn extreme_times_offsets_and_at_modifiers_do_not_wrap() {
    let rt = runtime();
    let st = per_second(600);
    let e = engine(50_000_000);
    let exprs = [
        "m",
        "m offset 100000000y",
        "m offset -100000000y",
        "rate(m[100000000y])",
        "m @ 9223372036854775.807",
        "m @ -9223372036854775.808",
        "m @ 1e300",
        "count_over_time(m[5m:1m] offset -100000000y)",
        "count_over_time(m[5m:1m] @ 1e300)",
        "timestamp(m)",
        "time()",
        "day_of_month(vector(1e300))",
    ];
    let times = [
        i64::MIN,
        -9_000_000_000_000_000_000,
        -1,
        0,
        9_000_000_000_000_000_000,
        i64::MAX,
    ];
    for q in exprs {
        for &t in &times {
            // Any answer or typed error will do; overflow would panic (tests build with
            // overflow checks).
            let _ = block_on(&rt, e.instant(&st, q, t));
        }
        for (start, end, step) in [
            (i64::MIN, i64::MAX, i64::MAX),
            (-9_000_000_000_000_000_000, 9_000_000_000_000_000_000, 1),
            (i64::MAX - 10, i64::MAX, 1),
            (i64::MIN, i64::MIN + 10, 3),
        ] {
            let _ = block_on(&rt, e.range(&st, q, start, end, step));
        }
    }
}

/// A day of samples and a range query whose every step sorts a day's window: hours of
/// work in a handful of steps, with almost no memory.
fn runaway() -> (MemStorage, &'static str, i64, i64, i64) {
    (
        per_second(86_400),
        "quantile_over_time(0.5, m[1d])",
        86_399_000,
        86_399_000 + 10_000 * 1_000,
        1_000,
    )
}

#[test]
fn the_deadline_ends_a_runaway_evaluation() {
    let rt = runtime();
    let (st, q, start, end, step) = runaway();
    let e = engine(50_000_000).with_timeout(Duration::from_millis(200));
    let started = Instant::now();
    let r = block_on(&rt, e.range(&st, q, start, end, step));
    assert!(matches!(r, Err(PromqlError::Timeout)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn cancellation_ends_a_runaway_evaluation() {
    let rt = runtime();
    let (st, q, start, end, step) = runaway();
    let cancel = Cancellation::new();
    let e = engine(50_000_000).with_cancellation(cancel.clone());
    let canceller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        cancel.cancel();
    });
    let started = Instant::now();
    let r = block_on(&rt, e.range(&st, q, start, end, step));
    canceller.join().unwrap();
    assert!(matches!(r, Err(PromqlError::Canceled)), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Parses, evaluates and drops `q` at time 0 on a thread with exactly the stack
/// [`stack_size_for`] promises for it.
fn eval_deep(q: String) -> Result<Value, PromqlError> {
    let stack = stack_size_for(nesting_bound(&q));
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let st = per_second(10);
            runtime().block_on(engine(50_000_000).instant(&st, &q, 5_000))
        })
        .unwrap()
        .join()
        .expect("evaluation thread")
}

fn scalar(r: Result<Value, PromqlError>) -> f64 {
    match r {
        Ok(Value::Scalar { v, .. }) => v,
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn vector_values(r: Result<Value, PromqlError>) -> Vec<f64> {
    match r {
        Ok(Value::Vector(v)) => v.into_iter().map(|s| s.v).collect(),
        other => panic!("expected a vector, got {other:?}"),
    }
}

#[test]
fn ten_thousand_term_chains_evaluate_as_in_prometheus() {
    let q = vec!["1"; 10_000].join("+");
    assert_eq!(nesting_bound(&q), 10_000);
    assert_eq!(scalar(eval_deep(q)), 10_000.0);
    let q = vec!["m"; 5_000].join(" or ");
    assert_eq!(vector_values(eval_deep(q)), vec![5.0]);
    let q = vec!["2"; 10_000].join(" ^ ");
    assert_eq!(scalar(eval_deep(q)), f64::INFINITY);
}

#[test]
fn ten_thousand_nested_parentheses_and_calls_evaluate() {
    let q = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(scalar(eval_deep(q)), 1.0);
    let q = format!("{}m{}", "abs(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(vector_values(eval_deep(q)), vec![5.0]);
    let q = format!("{}m{}", "sum(".repeat(5_000), ")".repeat(5_000));
    assert_eq!(vector_values(eval_deep(q)), vec![5.0]);
    let q = format!("{}1", "-".repeat(10_000));
    assert_eq!(scalar(eval_deep(q)), 1.0);
}

#[test]
fn deeper_than_the_limit_is_a_parse_error_found_without_parsing() {
    for q in [
        vec!["1"; MAX_NESTING + 1].join("+"),
        "(".repeat(1_000_000),
        format!("{}1{}", "(".repeat(MAX_NESTING), ")".repeat(MAX_NESTING)),
        "-".repeat(5_000_000),
    ] {
        // On this test thread's ordinary stack: refused before anything recurses (a
        // recursive parse of these would overflow it). No timing: this is not a benchmark.
        match crate::parse(&q) {
            Err(PromqlError::Parse(m)) => assert!(m.contains("nested too deeply"), "{m}"),
            other => panic!("expected a depth error, got {other:?}"),
        }
    }
}

#[test]
fn nesting_bound_ignores_strings_comments_and_matchers() {
    assert_eq!(nesting_bound("up"), 1);
    assert_eq!(nesting_bound(r#"up{a="((((+-", b=~"[[[["}"#), 1);
    assert_eq!(nesting_bound("up # ((((((\n"), 1);
    assert_eq!(nesting_bound("`((((` + 1"), 2);
    assert_eq!(nesting_bound("sum(rate(up[5m]))"), 4);
    assert_eq!(nesting_bound("a and b or c unless d"), 4);
}

#[test]
fn durations_past_go_time_duration_are_parse_errors_at_their_position() {
    // Prometheus 2.42: `invalid parameter "query": 1:10: parse error: duration out of range`
    // for the first of these (the API adds the parameter name).
    for (q, want) in [
        ("m offset 100000000y", "1:10: parse error: duration out of range"),
        ("rate(m[100000000y])", "1:8: parse error: duration out of range"),
        (
            "sum(m)\n + count_over_time(m[5m:100000000y])",
            "2:25: parse error: duration out of range",
        ),
    ] {
        match crate::parse(q) {
            Err(crate::PromqlError::Parse(m)) => assert_eq!(m, want, "{q}"),
            other => panic!("{q}: {other:?}"),
        }
    }
    // 292 years fits.
    assert!(crate::parse("m offset 292y").is_ok());
}
