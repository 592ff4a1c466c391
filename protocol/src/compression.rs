//! Compression codecs for a batch's records section. The header stays uncompressed so the broker can
//! check, index and patch a batch without decompressing it.
//!
//! Decompression is bounded: a compressed section declares its decompressed size, and a size above the
//! caller's limit is refused before anything is allocated.

use thiserror::Error;

/// The codec of a batch's records section (attribute bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    Zstd,
}

/// Why a records section could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompressionError {
    #[error("unknown compression codec id {0}")]
    UnknownCodec(u8),
    #[error("decompressed size {declared} bytes exceeds the limit of {limit} bytes")]
    TooLarge { declared: u64, limit: usize },
    #[error("compressed data is corrupt: {0}")]
    Corrupt(String),
}

impl Compression {
    /// The codec's id in the batch attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
            Compression::Zstd => 2,
        }
    }

    /// The codec with attribute id `id`.
    pub fn from_id(id: u8) -> Result<Self, CompressionError> {
        match id {
            0 => Ok(Compression::None),
            1 => Ok(Compression::Lz4),
            2 => Ok(Compression::Zstd),
            other => Err(CompressionError::UnknownCodec(other)),
        }
    }

    /// Compresses `input`, appending to `out`.
    pub fn compress_into(self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressionError> {
        match self {
            Compression::None => out.extend_from_slice(input),
            Compression::Lz4 => out.extend_from_slice(&lz4_flex::compress_prepend_size(input)),
            Compression::Zstd => {
                // Level 1: the producer's CPU is on the hot path; zstd's fast levels keep most of the ratio.
                let compressed = zstd::bulk::compress(input, 1)
                    .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
                out.extend_from_slice(&compressed);
            }
        }
        Ok(())
    }

    /// Decompresses `input`, refusing anything that would decompress to more than `limit` bytes.
    pub fn decompress(self, input: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
        match self {
            Compression::None => {
                if input.len() > limit {
                    return Err(CompressionError::TooLarge {
                        declared: input.len() as u64,
                        limit,
                    });
                }
                Ok(input.to_vec())
            }
            Compression::Lz4 => {
                let (declared, _) = lz4_flex::block::uncompressed_size(input)
                    .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
                if declared > limit {
                    return Err(CompressionError::TooLarge {
                        declared: declared as u64,
                        limit,
                    });
                }
                lz4_flex::decompress_size_prepended(input)
                    .map_err(|e| CompressionError::Corrupt(e.to_string()))
            }
            Compression::Zstd => {
                let declared = match zstd::zstd_safe::get_frame_content_size(input) {
                    Ok(Some(size)) => size,
                    Ok(None) => {
                        return Err(CompressionError::Corrupt(
                            "zstd frame does not declare its size".into(),
                        ))
                    }
                    Err(_) => return Err(CompressionError::Corrupt("not a zstd frame".into())),
                };
                if declared > limit as u64 {
                    return Err(CompressionError::TooLarge { declared, limit });
                }
                let out = zstd::bulk::decompress(input, declared as usize)
                    .map_err(|e| CompressionError::Corrupt(e.to_string()))?;
                if out.len() as u64 != declared {
                    return Err(CompressionError::Corrupt(
                        "zstd frame size differs from its declaration".into(),
                    ));
                }
                Ok(out)
            }
        }
    }
}
