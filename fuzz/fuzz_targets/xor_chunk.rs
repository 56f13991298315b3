//! XOR chunk decoding (`crates/chunk`), as the querier decodes chunks from
//! ingesters and the store. A chunk that decodes cleanly with increasing
//! timestamps (what the ingester appends) must survive a re-encode.
#![no_main]

use chunk::XorChunk;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(c) = XorChunk::from_bytes(bytes::Bytes::copy_from_slice(data)) else {
        return;
    };
    let _ = (c.first_time(), c.last_time(), c.last_value(), c.num_samples());
    let mut it = c.iter();
    let samples: Vec<(i64, f64)> = it.by_ref().collect();
    if it.error().is_some() || samples.len() != c.num_samples() {
        return;
    }
    if !samples.windows(2).all(|w| w[0].0 < w[1].0) {
        return;
    }
    let mut again = XorChunk::new();
    for &(t, v) in &samples {
        again.append(t, v);
    }
    let round: Vec<(i64, u64)> = again.iter().map(|(t, v)| (t, v.to_bits())).collect();
    let want: Vec<(i64, u64)> = samples.iter().map(|&(t, v)| (t, v.to_bits())).collect();
    assert_eq!(round, want, "re-encoded chunk differs");
    let parsed = XorChunk::from_bytes(again.to_bytes()).expect("our own encoding decodes");
    assert_eq!(parsed.num_samples(), samples.len());
});
