use bytes::Bytes;

use crate::{ChunkError, XorChunk, MAX_SAMPLES_PER_CHUNK};

/// Decodes a Go interpreted string literal body (octal `\NNN`, `\xNN`, and
/// the single-letter escapes) into bytes, so Prometheus test vectors can be
/// pasted verbatim.
fn go_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = b[i + 1];
        i += 2;
        match c {
            b'0'..=b'7' => {
                let oct = std::str::from_utf8(&b[i - 1..i + 2]).unwrap();
                out.push(u8::from_str_radix(oct, 8).unwrap());
                i += 2;
            }
            b'x' => {
                out.push(u8::from_str_radix(std::str::from_utf8(&b[i..i + 2]).unwrap(), 16).unwrap());
                i += 2;
            }
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            other => panic!("unknown escape \\{}", other as char),
        }
    }
    out
}

fn build(samples: &[(i64, f64)]) -> XorChunk {
    let mut c = XorChunk::new();
    for &(t, v) in samples {
        c.append(t, v);
    }
    c
}

/// Compares decoded samples bit-exactly (NaN payloads included).
fn assert_samples_eq(got: &[(i64, f64)], want: &[(i64, f64)]) {
    assert_eq!(got.len(), want.len(), "sample count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.0, w.0, "timestamp of sample {i}");
        assert_eq!(
            g.1.to_bits(),
            w.1.to_bits(),
            "value bits of sample {i}: {} vs {}",
            g.1,
            w.1
        );
    }
}

fn round_trip(samples: &[(i64, f64)]) {
    let c = build(samples);
    assert_eq!(c.num_samples(), samples.len());
    let got: Vec<_> = c.iter().collect();
    assert_samples_eq(&got, samples);
    // And through bytes.
    let loaded = XorChunk::from_bytes(Bytes::copy_from_slice(c.bytes())).unwrap();
    let got: Vec<_> = loaded.iter().collect();
    assert_samples_eq(&got, samples);
    assert_eq!(loaded.first_time(), samples.first().map(|s| s.0));
    assert_eq!(loaded.last_time(), samples.last().map(|s| s.0));
}

/// Deterministic pseudo-random numbers (SplitMix64) so failures reproduce.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// Golden vectors from Prometheus 2.x `storage/remote/read_handler_test.go`
// (TestStreamReadEndpoint, the version using `storage.Warnings`, i.e. the
// Prometheus 2.2x line Cortex v1.x vendored). The series there are loaded with
// `load 1m` and `0+100x240`: sample i is at t = i·60000 ms with value i·100.
// Prometheus cuts chunks at 120 samples, giving the chunks below.
const PROM_CHUNK_0_119: &str = r#"\000x\000\000\000\000\000\000\000\000\000\340\324\003\302|\005\224\000\301\254}\351z2\320O\355\264n[\007\316\224\243md\371\320\375\032Pm\nS\235\016Q\255\006P\275\250\277\312\201Z\003(3\240R\207\332\005(\017\240\322\201\332=(\023\2402\203Z\007(w\2402\201Z\017(\023\265\227\364P\033@\245\007\364\nP\033C\245\002t\036P+@e\036\364\016Pk@e\002t:P;A\245\001\364\nS\373@\245\006t\006P+C\345\002\364\006Pk@\345\036t\nP\033A\245\003\364:P\033@\245\006t\016ZJ\377\\\205\313\210\327\270\017\345+F[\310\347E)\355\024\241\366\342}(v\215(N\203)\326\207(\336\203(V\332W\362\202t4\240m\005(\377AJ\006\320\322\202t\374\240\255\003(oA\312:\3202"#;
const PROM_CHUNK_120_239: &str = r#"\000x\200\364\356\006@\307p\000\000\000\000\000\340\324\003\340>\224\355\260\277\322\200\372\005(=\240R\207:\003(\025\240\362\201z\003(\365\240r\203:\005(\r\241\322\201\372\r(\r\240R\237:\007(5\2402\201z\037(\025\2402\203:\005(\375\240R\200\372\r(\035\241\322\201:\003(5\240r\326g\364\271\213\227!\253q\037\312N\340GJ\033E)\375\024\241\266\362}(N\217(V\203)\336\207(\326\203(N\334W\322\203\2644\240}\005(\373AJ\031\3202\202\264\374\240\275\003(kA\3129\320R\201\2644\240\375\264\277\322\200\332\005(3\240r\207Z\003(\027\240\362\201Z\003(\363\240R\203\332\005(\017\241\322\201\332\r(\023\2402\237Z\007(7\2402\201Z\037(\023\240\322\200\332\005(\377\240R\200\332\r "#;
// One-sample chunks (t=7200000 v=12000, t=14400000 v=24000). Note the 15th,
// empty byte: Prometheus 2.x's writeByte quirk (see bstream.rs).
const PROM_CHUNK_120: &str = r#"\000\001\200\364\356\006@\307p\000\000\000\000\000\000"#;
const PROM_CHUNK_240: &str = r#"\000\001\200\350\335\r@\327p\000\000\000\000\000\000"#;

fn prom_samples(range: std::ops::Range<i64>) -> Vec<(i64, f64)> {
    range.map(|i| (i * 60_000, (i * 100) as f64)).collect()
}

#[test]
fn golden_prometheus_chunks_encode_byte_for_byte() {
    for (text, range) in [
        (PROM_CHUNK_0_119, 0..120),
        (PROM_CHUNK_120_239, 120..240),
        (PROM_CHUNK_120, 120..121),
        (PROM_CHUNK_240, 240..241),
    ] {
        let want = go_bytes(text);
        let samples = prom_samples(range.clone());
        let c = build(&samples);
        assert_eq!(c.bytes(), &want[..], "encoding samples {range:?}");
    }
}

#[test]
fn golden_prometheus_chunks_decode() {
    for (text, range) in [
        (PROM_CHUNK_0_119, 0..120),
        (PROM_CHUNK_120_239, 120..240),
        (PROM_CHUNK_240, 240..241),
    ] {
        let c = XorChunk::from_bytes(Bytes::from(go_bytes(text))).unwrap();
        let got: Vec<_> = c.iter().collect();
        assert_samples_eq(&got, &prom_samples(range));
    }
    // Prometheus ≥ 2.55 drops the empty trailing byte; such chunks decode too.
    let newer = go_bytes(r#"\000\001\200\364\356\006@\307p\000\000\000\000\000"#);
    let c = XorChunk::from_bytes(Bytes::from(newer)).unwrap();
    assert_eq!(c.iter().collect::<Vec<_>>(), vec![(7_200_000, 12000.0)]);
}

/// Worked by hand from the algorithm (bit strings in the comments).
#[test]
fn golden_hand_derived_vector() {
    let c = build(&[(1000, 1.0), (2000, 1.0), (3000, 2.0), (3500, 2.0)]);
    let want: &[u8] = &[
        0x00, 0x04, // 4 samples
        0xd0, 0x0f, // varint(1000) = zig-zag 2000
        0x3f, 0xf0, 0, 0, 0, 0, 0, 0, // 1.0 raw
        0xe8, 0x07, // uvarint(1000), written into the empty byte the raw value left
        // 0 (value unchanged) | 0 (dod 0) 1 1 00001 001011 11111111111 (2.0: leading 1, 11 bits)
        // | 10 11111000001100 (dod -500 in 14 bits) 0 (value unchanged), zero padded
        0x30, 0x97, 0xff, 0xef, 0x83, 0x00,
    ];
    assert_eq!(c.bytes(), want);
    round_trip(&[(1000, 1.0), (2000, 1.0), (3000, 2.0), (3500, 2.0)]);
}

#[test]
fn empty_chunk() {
    let c = XorChunk::new();
    assert_eq!(c.bytes(), &[0, 0]);
    assert_eq!(c.num_samples(), 0);
    assert_eq!(c.first_time(), None);
    assert_eq!(c.last_time(), None);
    assert_eq!(c.iter().count(), 0);
    let loaded = XorChunk::from_bytes(Bytes::from_static(&[0, 0])).unwrap();
    assert!(loaded.is_empty());
}

#[test]
fn one_sample_and_full_chunk() {
    round_trip(&[(42, 3.5)]);
    let full: Vec<_> = (0..MAX_SAMPLES_PER_CHUNK as i64)
        .map(|i| (i * 15_000, i as f64 * 0.5))
        .collect();
    round_trip(&full);
    let c = build(&full);
    assert!(c.is_full());
    assert_eq!(c.first_time(), Some(0));
    assert_eq!(c.last_time(), Some(119 * 15_000));
}

#[test]
fn special_values_keep_their_bits() {
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let other_nan = f64::from_bits(0x7ff8_0000_0000_0001);
    let samples = [
        (1, f64::NAN),
        (2, stale),
        (3, f64::INFINITY),
        (4, f64::NEG_INFINITY),
        (5, stale),
        (6, other_nan),
        (7, -0.0),
        (8, 0.0),
        (9, f64::MIN_POSITIVE),
        (10, f64::MAX),
        (11, f64::MIN),
        (12, f64::from_bits(1)), // smallest subnormal: XOR with leading zeros ≥ 32
        (13, f64::from_bits(0x8000_0000_0000_0001)), // 64 meaningful bits vs 0x1…
    ];
    round_trip(&samples);
    let c = build(&samples);
    assert_eq!(c.last_value().unwrap().to_bits(), samples[12].1.to_bits());
}

#[test]
fn sixty_four_meaningful_bits_are_written_as_zero() {
    // 0.0 then 0x8000…0001: XOR has no leading or trailing zeros.
    let c = build(&[(0, 0.0), (1, f64::from_bits(0x8000_0000_0000_0001))]);
    // header(2) varint(0)=0x00, 64 zero bits, 0x01 (uvarint 1), then
    // 1 1 00000 000000 <64 bits: 1 0…0 1>
    let b = c.bytes();
    assert_eq!(&b[..12], &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01]);
    assert_eq!(b[12], 0b1100_0000);
    assert_eq!(b[13], 0b0000_0100); // last sig-bit field bit 0, then the XOR's top bit 1
    round_trip(&[(0, 0.0), (1, f64::from_bits(0x8000_0000_0000_0001))]);
}

#[test]
fn identical_values_cost_one_bit_each() {
    let samples: Vec<_> = (0..120).map(|i| (1_000_000 + i * 10_000, 7.25)).collect();
    let c = build(&samples);
    // 2 header + 3 varint(zig-zag 2e6) + 8 value + 2 uvarint(10000) bytes,
    // then 1 bit for sample 1's value + 118 × (1 dod bit + 1 value bit) = 237 bits.
    assert_eq!(c.size_bytes(), 15 + 237usize.div_ceil(8));
    round_trip(&samples);
}

#[test]
fn timestamps_negative_huge_and_every_dod_bucket() {
    let samples = [
        (-5_000_000_000_000i64, 1.0),
        (-4_999_999_999_000, 2.0),
        (-4_999_999_998_000, 3.0), // dod 0
        (-4_999_999_997_001, 4.0), // dod +1
        (-4_999_999_988_808, 5.0), // dod 8192: top of the 14-bit bucket
        (-4_999_999_972_425, 6.0), // dod -8190 → 14 bits negative
        (-4_999_999_890_000, 7.0), // 17-bit bucket
        (-4_999_999_000_000, 8.0), // 20-bit bucket
        (0, 9.0),                  // 64-bit bucket
        (1, 9.0),
        (i64::MAX / 2, 10.0), // huge delta again
        (i64::MAX / 2 + 1, 10.0),
        (i64::MAX, 11.0),
    ];
    round_trip(&samples);
    // Extreme: the delta of the first two samples spans the whole i64 range.
    round_trip(&[(i64::MIN, 1.0), (i64::MAX, 2.0), (i64::MAX, 3.0)]);
}

#[test]
fn dod_bucket_boundaries_round_trip() {
    for nbits in [14u32, 17, 20] {
        let half = 1i64 << (nbits - 1);
        for dod in [half, half + 1, -(half - 1), -half, -(half + 1), half - 1] {
            let base = 1_000_000_000i64;
            let d1 = 100_000_000i64;
            let samples = [
                (base, 1.0),
                (base + d1, 2.0),
                (base + 2 * d1 + dod, 3.0),
                (base + 3 * d1 + dod, 4.0),
            ];
            round_trip(&samples);
        }
    }
}

#[test]
fn random_series_round_trip() {
    let mut rng = SplitMix(0x5eed);
    for case in 0..300 {
        let n = 1 + rng.below(MAX_SAMPLES_PER_CHUNK as u64) as usize;
        let mut t = rng.next() as i64 >> rng.below(40);
        let mut v = f64::from_bits(rng.next());
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            samples.push((t, v));
            // Mostly regular scrapes with jitter, sometimes big gaps.
            let step = match rng.below(10) {
                0 => rng.below(1 << 40) as i64,
                1 => rng.below(100) as i64,
                _ => 15_000 + rng.below(200) as i64 - 100,
            };
            t = t.wrapping_add(step);
            v = match rng.below(6) {
                0 => v,
                1 => f64::from_bits(rng.next()),
                2 => v + 1.0,
                3 => (rng.below(1000) as f64) / 8.0,
                4 => f64::from_bits(v.to_bits() ^ (1 << rng.below(64))),
                _ => v * 1.0001,
            };
        }
        let c = build(&samples);
        let got: Vec<_> = c.iter().collect();
        assert_eq!(got.len(), n, "case {case}");
        assert_samples_eq(&got, &samples);
    }
}

#[test]
fn appending_after_from_bytes_continues_the_stream() {
    let mut rng = SplitMix(7);
    let samples: Vec<_> = (0..120i64)
        .map(|i| (i * 10_000 + rng.below(50) as i64, (rng.below(64) as f64).sqrt()))
        .collect();
    let whole = build(&samples);
    for split in [0usize, 1, 2, 3, 10, 60, 119] {
        let head = build(&samples[..split]);
        let mut loaded = XorChunk::from_bytes(Bytes::copy_from_slice(head.bytes())).unwrap();
        for &(t, v) in &samples[split..] {
            loaded.append(t, v);
        }
        assert_eq!(loaded.bytes(), whole.bytes(), "split at {split}");
    }
}

#[test]
fn appending_to_a_chunk_with_slack_bytes_trims_them() {
    let head = build(&[(10, 1.0), (20, 2.0), (30, 3.0)]);
    let mut padded = head.bytes().to_vec();
    padded.extend_from_slice(&[0, 0, 0]);
    let mut loaded = XorChunk::from_bytes(Bytes::from(padded.clone())).unwrap();
    // Bytes are kept as given until the chunk changes.
    assert_eq!(loaded.bytes(), &padded[..]);
    loaded.append(40, 4.0);
    assert_eq!(
        loaded.bytes(),
        build(&[(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0)]).bytes()
    );
}

#[test]
fn corrupt_chunks_are_rejected() {
    assert_eq!(
        XorChunk::from_bytes(Bytes::from_static(&[0])).unwrap_err(),
        ChunkError::TooShort(1)
    );
    let good = build(&[(1, 1.0), (2, 2.0), (3, 3.5)]);
    let b = good.bytes();
    for cut in 2..b.len() - 1 {
        let err = XorChunk::from_bytes(Bytes::copy_from_slice(&b[..cut])).unwrap_err();
        assert!(
            matches!(err, ChunkError::Truncated { total: 3, .. }),
            "cut {cut}: {err:?}"
        );
    }
    // Header claims more samples than the stream holds.
    let mut lying = b.to_vec();
    lying[1] = 200;
    assert!(XorChunk::from_bytes(Bytes::from(lying)).is_err());
    // Varint that never ends.
    let endless = [0u8, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert!(matches!(
        XorChunk::from_bytes(Bytes::copy_from_slice(&endless)),
        Err(ChunkError::VarintOverflow { .. })
    ));
}

#[test]
fn iterator_reports_why_it_stopped() {
    let good = build(&[(1, 1.0), (2, 2.0)]);
    let mut bytes = good.bytes().to_vec();
    bytes[1] = 5; // claim 5 samples
                  // Bypass from_bytes validation by iterating a hand-made chunk's bytes.
    let err = XorChunk::from_bytes(Bytes::from(bytes)).unwrap_err();
    assert!(matches!(err, ChunkError::Truncated { total: 5, .. }));
}

#[test]
fn equal_chunks_compare_by_bytes() {
    let a = build(&[(1, 1.0), (2, 2.0)]);
    let b = XorChunk::from_bytes(a.to_bytes()).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, build(&[(1, 1.0), (2, 2.5)]));
}
