//! Remote-write body decoding: block snappy around a protobuf `WriteRequest`,
//! with the `-distributor.max-recv-msg-size` limit applied before any work
//! proportional to the claimed size is done.

use bytes::Bytes;
use prost::Message;
use proto::cortex::{write_request::SourceEnum, WriteRequest};
use server::HttpError;

const FLAG_HINT: &str = "raise -distributor.max-recv-msg-size";

/// Why a remote-write body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty request body: expected a snappy-compressed protobuf WriteRequest")]
    Empty,
    #[error("message larger than max: compressed body of {size} bytes exceeds the limit of {max} bytes ({FLAG_HINT})")]
    CompressedTooLarge { size: u64, max: usize },
    #[error(
        "message larger than max: decompressed body of {size} bytes exceeds the limit of {max} bytes ({FLAG_HINT})"
    )]
    DecompressedTooLarge { size: usize, max: usize },
    #[error("message larger than max: request body exceeds the limit of {max} bytes ({FLAG_HINT})")]
    BodyTooLarge { max: usize },
    #[error("reading request body: {0}")]
    Read(String),
    #[error("decompressing request body (expected block snappy, as Prometheus remote write sends): {0}")]
    Snappy(#[from] snap::Error),
    #[error("unmarshalling protobuf WriteRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
}

impl From<DecodeError> for HttpError {
    fn from(e: DecodeError) -> Self {
        // 413 rather than Cortex's 400: both make Prometheus drop the batch,
        // and 413 tells the operator what happened without reading the body.
        let code = match e {
            DecodeError::CompressedTooLarge { .. }
            | DecodeError::DecompressedTooLarge { .. }
            | DecodeError::BodyTooLarge { .. } => 413,
            _ => 400,
        };
        HttpError::new(code, e.to_string())
    }
}

/// Decodes a block-snappy protobuf `WriteRequest`. Label names and values of
/// the result are slices of one decompressed buffer (no per-label copies).
pub fn decode_write_request(compressed: &[u8], max_size: usize) -> Result<WriteRequest, DecodeError> {
    if compressed.is_empty() {
        return Err(DecodeError::Empty);
    }
    if compressed.len() > max_size {
        return Err(DecodeError::CompressedTooLarge {
            size: compressed.len() as u64,
            max: max_size,
        });
    }
    // The length header is attacker-controlled: check it before allocating.
    let size = snap::raw::decompress_len(compressed)?;
    if size > max_size {
        return Err(DecodeError::DecompressedTooLarge { size, max: max_size });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(compressed)?;
    let mut req = WriteRequest::decode(Bytes::from(raw))?;
    // Only internal callers (the ruler) may claim another source or skip
    // label-name validation; an HTTP client may not.
    req.source = SourceEnum::Api as i32;
    req.skip_label_name_validation = false;
    Ok(req)
}

/// Encodes a `WriteRequest` the way Prometheus sends it (tests and tools).
pub fn encode_write_request(req: &WriteRequest) -> Vec<u8> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy compression of an in-memory buffer cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::cortex::{LabelPair, Sample, TimeSeries};

    fn sample_request() -> WriteRequest {
        WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![LabelPair {
                    name: Bytes::from_static(b"__name__"),
                    value: Bytes::from_static(b"up"),
                }],
                samples: vec![Sample {
                    value: 1.0,
                    timestamp_ms: 1000,
                }],
            }],
            source: SourceEnum::Rule as i32,
            metadata: vec![],
            skip_label_name_validation: true,
        }
    }

    #[test]
    fn round_trip_forces_api_source_and_validation() {
        let body = encode_write_request(&sample_request());
        let req = decode_write_request(&body, 1 << 20).unwrap();
        assert_eq!(req.timeseries.len(), 1);
        assert_eq!(&req.timeseries[0].labels[0].value[..], b"up");
        assert_eq!(req.source, SourceEnum::Api as i32);
        assert!(!req.skip_label_name_validation);
    }

    #[test]
    fn empty_body_is_400() {
        let e = decode_write_request(&[], 100).unwrap_err();
        assert!(matches!(e, DecodeError::Empty));
        let h = HttpError::from(e);
        assert_eq!(h.code, 400);
        assert!(h.message.contains("empty request body"), "{}", h.message);
    }

    #[test]
    fn truncated_snappy_is_400() {
        let body = encode_write_request(&sample_request());
        let e = decode_write_request(&body[..body.len() - 3], 1 << 20).unwrap_err();
        assert!(matches!(e, DecodeError::Snappy(_)), "{e}");
        let h = HttpError::from(e);
        assert_eq!(h.code, 400);
        assert!(h.message.contains("snappy"), "{}", h.message);
    }

    #[test]
    fn not_snappy_is_400() {
        // Raw (uncompressed) protobuf, as a misconfigured client would send.
        // Its first byte (0x0a) claims a decompressed length of 10 bytes,
        // which the rest of the stream does not match.
        let raw = sample_request().encode_to_vec();
        let e = decode_write_request(&raw, 1 << 20).unwrap_err();
        assert!(matches!(e, DecodeError::Snappy(_)), "{e}");
        // Framed snappy (the stream format) is not the block format either.
        let mut framed = Vec::new();
        {
            use std::io::Write;
            let mut w = snap::write::FrameEncoder::new(&mut framed);
            w.write_all(&raw).unwrap();
        }
        let e = decode_write_request(&framed, 1 << 20).unwrap_err();
        assert_eq!(HttpError::from(e).code, 400);
    }

    #[test]
    fn garbage_protobuf_is_400() {
        let garbage = snap::raw::Encoder::new()
            .compress_vec(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01])
            .unwrap();
        let e = decode_write_request(&garbage, 1 << 20).unwrap_err();
        assert!(matches!(e, DecodeError::Protobuf(_)), "{e}");
        let h = HttpError::from(e);
        assert_eq!(h.code, 400);
        assert!(
            h.message.starts_with("unmarshalling protobuf WriteRequest"),
            "{}",
            h.message
        );
    }

    #[test]
    fn oversized_compressed_is_413() {
        let body = encode_write_request(&sample_request());
        let e = decode_write_request(&body, body.len() - 1).unwrap_err();
        let h = HttpError::from(e);
        assert_eq!(h.code, 413);
        assert!(
            h.message.contains(&format!("compressed body of {} bytes", body.len())),
            "{}",
            h.message
        );
        assert!(h.message.contains("-distributor.max-recv-msg-size"), "{}", h.message);
    }

    #[test]
    fn oversized_decompressed_is_413_before_decompressing() {
        // 1 MiB of zeros compresses to a few KiB.
        let raw = vec![0u8; 1 << 20];
        let body = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let max = 64 << 10;
        assert!(body.len() < max);
        let e = decode_write_request(&body, max).unwrap_err();
        assert!(
            matches!(e, DecodeError::DecompressedTooLarge { size, max: m } if size == 1 << 20 && m == max),
            "{e}"
        );
        assert_eq!(HttpError::from(e).code, 413);

        // A forged length header claiming 4 GiB is refused without allocating.
        let forged = [0x80, 0x80, 0x80, 0x80, 0x0f, 0x00];
        let e = decode_write_request(&forged, max).unwrap_err();
        assert!(matches!(e, DecodeError::DecompressedTooLarge { .. }), "{e}");
    }
}
