//! Cortex chunk objects (`crates/storage/src/chunk_object.rs`) as fetched
//! from S3/filesystem: external key, header, snappy-framed JSON metadata,
//! payload; then the XOR payload.
//!
//! Input: the external key, a newline, the object bytes. The key names the
//! chunk the object is checked against; its checksum is not enforced (a
//! fuzzer cannot forge CRCs), the legacy form has none anyway. A decoded
//! object must re-encode to one that decodes to the same chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage::chunk_object::{self, ChunkRef};

fuzz_target!(|data: &[u8]| {
    let Some(nl) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(key) = std::str::from_utf8(&data[..nl]) else {
        return;
    };
    let Ok(r) = ChunkRef::parse(cortex_fuzz::TENANT, key) else {
        return;
    };
    assert_eq!(
        ChunkRef::parse(cortex_fuzz::TENANT, &r.external_key()).as_ref(),
        Ok(&r),
        "external key {key:?} does not round-trip"
    );
    let r = ChunkRef { checksum: None, ..r };
    let object = bytes::Bytes::copy_from_slice(&data[nl + 1..]);
    let Ok(entry) = chunk_object::decode(&r, object) else {
        return;
    };
    if entry.encoding == chunk::ENCODING_PROMETHEUS_XOR {
        if let Ok(c) = chunk::XorChunk::from_bytes(entry.data.clone()) {
            let _ = c.iter().count();
        }
    }
    let (bytes, again) = chunk_object::encode_with_ref(&entry);
    let back = chunk_object::decode(&again, bytes).expect("our own encoding decodes");
    assert_eq!(back.labels, entry.labels);
    assert_eq!(back.data, entry.data);
    assert_eq!((back.from_ms, back.through_ms), (entry.from_ms, entry.through_ms));
});
