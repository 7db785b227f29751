//! Hashes of objects, streamed: the SHA-256 of the **uncompressed** content (what a digest
//! records), and the xxh3-128 of the bytes as stored (what keytrail's manifest records, so an
//! ingested object can be matched to the bytes that were verified). Memory stays at a few
//! buffers whatever the object's size; a decompression bomb stops at the limit.

use std::io::{self, BufReader, Read};

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use crate::error::ReadError;

/// What hashing an object found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hashed {
    /// Lower-case hex SHA-256 of the uncompressed content.
    pub sha256: String,
    /// `xxh3:<32 hex>` of the stored bytes (as `keytrail ingest` records them).
    pub stored_hash: String,
    /// Bytes as stored.
    pub stored_bytes: u64,
    /// Bytes once decompressed.
    pub content_bytes: u64,
}

/// The store's reader, counting and hashing what it hands on, and remembering its own failure
/// (so a broken connection is told from corrupt gzip).
struct Tap<R> {
    inner: R,
    xxh3: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
    failed: Option<String>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.xxh3.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                self.failed = Some(e.to_string());
                Err(e)
            }
        }
    }
}

const CHUNK: usize = 64 << 10;

/// Stream `reader` through gunzip (when the bytes are gzip; a copy the user gunzipped is read
/// as it is) and hand every chunk of content to `sink`. Fails with `TooLarge` past `limit`
/// bytes of content.
pub fn consume(
    reader: impl Read,
    limit: u64,
    mut sink: impl FnMut(&[u8]),
) -> Result<Hashed, ReadError> {
    let mut tap = Tap {
        inner: reader,
        xxh3: xxhash_rust::xxh3::Xxh3::new(),
        bytes: 0,
        failed: None,
    };
    let mut sha = Sha256::new();
    let mut content = 0u64;
    let result = (|| -> Result<(), ReadError> {
        // The first two bytes say whether this is gzip.
        let mut head = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            match tap.read(&mut head[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e.to_string())),
            }
        }
        let gzip = got == 2 && head == [0x1f, 0x8b];
        let stream = io::Cursor::new(head[..got].to_vec()).chain(&mut tap);
        let mut source: Box<dyn Read + '_> = if gzip {
            Box::new(MultiGzDecoder::new(BufReader::with_capacity(CHUNK, stream)))
        } else {
            Box::new(stream)
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match source.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Gzip(e.to_string())),
            };
            content += n as u64;
            if content > limit {
                return Err(ReadError::TooLarge { limit });
            }
            sha.update(&buf[..n]);
            sink(&buf[..n]);
        }
        Ok(())
    })();
    if let Some(failed) = tap.failed.take() {
        return Err(ReadError::Io(failed));
    }
    result?;
    // Anything the decoder left unread still belongs to the stored bytes.
    io::copy(&mut tap, &mut io::sink()).map_err(|e| ReadError::Io(e.to_string()))?;
    Ok(Hashed {
        sha256: data_encoding::HEXLOWER.encode(&sha.finalize()),
        stored_hash: format!("xxh3:{:032x}", tap.xxh3.digest128()),
        stored_bytes: tap.bytes,
        content_bytes: content,
    })
}

/// Hash an object without keeping its content.
pub fn hash(reader: impl Read, limit: u64) -> Result<Hashed, ReadError> {
    consume(reader, limit, |_| {})
}

/// Read an object's content whole (a digest), up to `limit` bytes, with its hashes.
pub fn read_content(reader: impl Read, limit: u64) -> Result<(Vec<u8>, Hashed), ReadError> {
    let mut content = Vec::new();
    let hashed = consume(reader, limit, |chunk| content.extend_from_slice(chunk))?;
    Ok((content, hashed))
}

/// Lower-case hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).expect("gzip");
        e.finish().expect("gzip")
    }

    #[test]
    fn the_hash_is_of_the_uncompressed_content() {
        let content = br#"{"Records":[]}"#;
        let gz = gzip(content);
        let h = hash(&gz[..], 1 << 20).expect("hash");
        assert_eq!(h.sha256, sha256_hex(content));
        // FIPS 180-2's test vector.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.stored_bytes, gz.len() as u64);
        assert_eq!(h.content_bytes, content.len() as u64);
        assert_eq!(
            h.stored_hash,
            format!("xxh3:{:032x}", xxhash_rust::xxh3::xxh3_128(&gz))
        );
        // A copy the user gunzipped hashes the same.
        assert_eq!(hash(&content[..], 1 << 20).expect("raw").sha256, h.sha256);
        // Two gzip members: the content of both.
        let mut two = gzip(b"{\"Records\":");
        two.extend(gzip(b"[]}"));
        assert_eq!(hash(&two[..], 1 << 20).expect("two").sha256, h.sha256);
    }

    #[test]
    fn truncated_corrupt_and_huge_objects_are_named_errors() {
        let content = vec![b'x'; 100_000];
        let gz = gzip(&content);
        for cut in [gz.len() - 4, gz.len() / 2, 10, 3] {
            let e = hash(&gz[..cut], 1 << 20).expect_err("truncated");
            assert!(matches!(e, ReadError::Gzip(_)), "cut {cut}: {e:?}");
        }
        let mut bad = gz.clone();
        bad[20] ^= 0xff;
        assert!(matches!(hash(&bad[..], 1 << 20), Err(ReadError::Gzip(_))));
        // A bomb: 100 kB of content, limit 10 kB.
        assert_eq!(
            hash(&gz[..], 10_000),
            Err(ReadError::TooLarge { limit: 10_000 })
        );
        // Empty objects hash as empty content.
        assert_eq!(hash(&b""[..], 10).expect("empty").sha256, sha256_hex(b""));
    }

    #[test]
    fn a_failing_store_is_not_a_corrupt_file() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
                }
                self.0 -= 1;
                buf[0] = 0x1f;
                Ok(1)
            }
        }
        assert!(matches!(hash(Broken(3), 100), Err(ReadError::Io(_))));
    }
}
