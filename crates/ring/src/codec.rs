//! Ring descriptor codec: protobuf, then snappy **block** compression (Cortex `ring.ProtoCodec`
//! wrapped in snappy), one value per ring key.

use prost::Message;

use crate::Desc;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("ring descriptor is not valid snappy: {0}")]
    Snappy(#[from] snap::Error),
    #[error("ring descriptor is not a valid ring.Desc protobuf: {0}")]
    Proto(#[from] prost::DecodeError),
}

/// Encodes a descriptor for storage.
pub fn encode_desc(desc: &Desc) -> Result<Vec<u8>, CodecError> {
    Ok(snap::raw::Encoder::new().compress_vec(&desc.encode_to_vec())?)
}

/// Decodes a stored descriptor; an empty value is an empty ring.
pub fn decode_desc(data: &[u8]) -> Result<Desc, CodecError> {
    if data.is_empty() {
        return Ok(Desc::default());
    }
    let raw = snap::raw::Decoder::new().decompress_vec(data)?;
    Ok(Desc::decode(raw.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceDesc, InstanceState};

    #[test]
    fn round_trip_is_snappy_block_of_protobuf() {
        let mut desc = Desc::default();
        desc.ingesters.insert(
            "ing-1".into(),
            InstanceDesc {
                addr: "10.0.0.1:9095".into(),
                timestamp: 1_600_000_000,
                state: InstanceState::Leaving as i32,
                tokens: vec![1, 5, 4_000_000_000],
                zone: "zone-a".into(),
                registered_timestamp: 1_599_999_000,
            },
        );
        let bytes = encode_desc(&desc).unwrap();
        // Block format: the stream starts with the varint of the uncompressed length, and no
        // framed-format stream identifier (0xff 0x06 0x00 0x00 "sNaPpY").
        let raw = desc.encode_to_vec();
        assert_eq!(snap::raw::decompress_len(&bytes).unwrap(), raw.len());
        assert_ne!(bytes[0], 0xff);
        assert_eq!(snap::raw::Decoder::new().decompress_vec(&bytes).unwrap(), raw);
        assert_eq!(decode_desc(&bytes).unwrap(), desc);
        assert_eq!(decode_desc(&[]).unwrap(), Desc::default());
        assert!(matches!(decode_desc(b"garbage!"), Err(CodecError::Snappy(_))));
    }
}
