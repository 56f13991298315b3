//! WAL replay (`crates/ingester/src/wal`) into a fresh ingester.
//!
//! First byte, bit 0: 0 → WAL segment (series and samples records),
//! 1 → checkpoint segment (checkpoint series records with chunks).
//! Bit 1: 0 → the rest is the segment file as read from disk; 1 → the rest
//! is records separated by `|REC|`, framed here with valid CRCs so that
//! mutations reach the record decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let framed;
    let segment = if mode & 2 == 2 {
        framed = cortex_fuzz::frame_segment(&cortex_fuzz::split_records(rest));
        &framed[..]
    } else {
        rest
    };
    let metrics = server::Metrics::new();
    let ing = ingester::Ingester::new(ingester::Config::default(), &metrics);
    if mode & 1 == 1 {
        let _ = ingester::wal::load_checkpoint_segment(&ing, segment);
    } else {
        let (stats, _) = ingester::wal::replay_segment(&ing, segment);
        assert!(stats.samples_appended + stats.samples_skipped <= segment.len() as u64);
    }
});
