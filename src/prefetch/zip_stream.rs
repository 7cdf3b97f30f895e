//! Reading a ZIP entry by entry as it streams in, in both forms XNAT writes.
//!
//! XNAT builds ZIPs with Java's `ZipOutputStream` (xnat-web
//! `org/nrg/xnat/restlet/representations/ZipRepresentation.java`, through `ZipUtils`). Its
//! `compression` query parameter picks the method (`SecureResource.identifyCompression`), and
//! without it `ZipUtils.DEFAULT_COMPRESSION` applies, which is STORED (NrgXnat/xnat
//! `org/nrg/xft/utils/zip/ZipUtils.java`). A STORED entry's local header carries its size and
//! CRC (`ZipUtils.write` computes them first). A DEFLATED entry (`compression=8`, and older
//! servers) has neither: Java writes them in a data descriptor after the data. Such an entry is
//! read by inflating until the DEFLATE stream ends itself; the descriptor then gives the CRC
//! and sizes to check. The `zip` crate's stream reader refuses that form, hence this reader.
//!
//! Entry names are returned as bytes, never used as paths here.

use std::io::{self, BufRead, BufReader, Read};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const END_OF_CENTRAL_DIRECTORY: u32 = 0x0605_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
const STORED: u16 = 0;
const DEFLATED: u16 = 8;
/// Where a 32-bit size field says "see the ZIP64 extra field".
const ZIP64_MARK: u32 = u32::MAX;

/// One entry's local header.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Vec<u8>,
    /// Compression method: 0 STORED, 8 DEFLATED.
    pub method: u16,
    /// The uncompressed size, when the header gives it (not with a data descriptor).
    pub size: Option<u64>,
    compressed: Option<u64>,
    crc: u32,
    descriptor: bool,
    zip64: bool,
}

/// Why an entry could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// The entry was read to its end but is not right (CRC, sizes, method, or the sink
    /// refused it): the stream is still aligned on the next entry.
    #[error("{0}")]
    Bad(String),
    /// Reading failed: the rest of the stream is lost.
    #[error("{0}")]
    Stream(String),
}

pub struct ZipStream<R: Read> {
    r: BufReader<R>,
    /// Where entries' data is read to, kept from one entry to the next (allocating and
    /// zeroing it for each of thousands of small entries cost as much as copying them).
    buf: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn stream_err(e: io::Error) -> EntryError {
    EntryError::Stream(e.to_string())
}

impl<R: Read> ZipStream<R> {
    pub fn new(r: R) -> ZipStream<R> {
        ZipStream {
            r: BufReader::with_capacity(256 * 1024, r),
            buf: vec![0u8; 256 * 1024],
        }
    }

    /// The next entry's header; `None` where the central directory (the archive's end) begins.
    pub fn next_entry(&mut self) -> io::Result<Option<Entry>> {
        let mut sig = [0u8; 4];
        self.r.read_exact(&mut sig)?;
        match u32::from_le_bytes(sig) {
            LOCAL_HEADER => {}
            CENTRAL_HEADER | END_OF_CENTRAL_DIRECTORY => return Ok(None),
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("not a ZIP entry (signature {other:#010x})"),
                ));
            }
        }
        let mut h = [0u8; 26];
        self.r.read_exact(&mut h)?;
        let flags = u16_at(&h, 2);
        let method = u16_at(&h, 4);
        let crc = u32_at(&h, 10);
        let (csize32, usize32) = (u32_at(&h, 14), u32_at(&h, 18));
        let mut name = vec![0u8; usize::from(u16_at(&h, 22))];
        self.r.read_exact(&mut name)?;
        let mut extra = vec![0u8; usize::from(u16_at(&h, 24))];
        self.r.read_exact(&mut extra)?;
        if flags & 1 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "an encrypted ZIP entry",
            ));
        }
        let descriptor = flags & 8 != 0;
        // The ZIP64 extra field holds the sizes the 32-bit fields mark as too large.
        let mut zip64 = None;
        let mut at = 0;
        while at + 4 <= extra.len() {
            let (id, len) = (u16_at(&extra, at), usize::from(u16_at(&extra, at + 2)));
            let body = &extra[at + 4..(at + 4 + len).min(extra.len())];
            if id == ZIP64_EXTRA {
                zip64 = Some(body.to_vec());
            }
            at += 4 + len;
        }
        let mut fields = zip64
            .iter()
            .flat_map(|b| b.chunks_exact(8))
            .map(|c| u64_at(c, 0));
        let size = if usize32 == ZIP64_MARK {
            fields.next()
        } else {
            Some(u64::from(usize32))
        };
        let compressed = if csize32 == ZIP64_MARK {
            fields.next()
        } else {
            Some(u64::from(csize32))
        };
        let known = |n: Option<u64>| n.filter(|_| !descriptor);
        Ok(Some(Entry {
            name,
            method,
            size: known(size),
            compressed: known(compressed),
            crc,
            descriptor,
            zip64: zip64.is_some(),
        }))
    }

    /// Reads the data of `entry` (whose header [`Self::next_entry`] just gave) into `sink`, chunk
    /// by chunk, and checks it against the CRC and sizes of its header or data descriptor.
    /// Returns its size. A sink that fails does not stop the reading: the rest of the entry
    /// is read and dropped, so that the stream stays aligned on the next entry.
    pub fn read_data(
        &mut self,
        entry: &Entry,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> Result<u64, EntryError> {
        let mut crc = crc32fast::Hasher::new();
        let mut size = 0u64;
        let mut refused = None;
        let buf = &mut self.buf;
        let mut deliver = |chunk: &[u8]| {
            crc.update(chunk);
            size += chunk.len() as u64;
            if refused.is_none()
                && let Err(e) = sink(chunk)
            {
                refused = Some(e);
            }
        };
        let compressed = match (entry.method, entry.compressed) {
            (STORED, Some(len)) => {
                let mut data = (&mut self.r).take(len);
                loop {
                    let n = data.read(buf).map_err(stream_err)?;
                    if n == 0 {
                        break;
                    }
                    deliver(&buf[..n]);
                }
                if size != len {
                    return Err(EntryError::Stream(format!(
                        "the stream ended {} bytes into an entry of {len}",
                        size
                    )));
                }
                len
            }
            (DEFLATED, _) => {
                // The DEFLATE stream ends itself; the decoder takes no byte past its end.
                let mut inflate = flate2::bufread::DeflateDecoder::new(&mut self.r);
                loop {
                    let n = inflate.read(buf).map_err(stream_err)?;
                    if n == 0 {
                        break;
                    }
                    deliver(&buf[..n]);
                }
                inflate.total_in()
            }
            (method, Some(len)) => {
                // Another method, of known length: passed over.
                io::copy(&mut (&mut self.r).take(len), &mut io::sink()).map_err(stream_err)?;
                return Err(EntryError::Bad(format!("compression method {method}")));
            }
            (method, None) => {
                return Err(EntryError::Stream(format!(
                    "compression method {method} with no size: cannot find the entry's end"
                )));
            }
        };
        let (want_crc, want_size, want_compressed) = if entry.descriptor {
            self.descriptor(entry.zip64 || size >= u64::from(ZIP64_MARK))?
        } else {
            (entry.crc, entry.size.unwrap_or(size), compressed)
        };
        let got_crc = crc.finalize();
        if (got_crc, size, compressed) != (want_crc, want_size, want_compressed) {
            return Err(EntryError::Bad(format!(
                "CRC {got_crc:08x}, {size} bytes ({compressed} compressed) where the archive \
                 says CRC {want_crc:08x}, {want_size} bytes ({want_compressed} compressed)"
            )));
        }
        match refused {
            Some(e) => Err(EntryError::Bad(e.to_string())),
            None => Ok(size),
        }
    }

    /// A data descriptor: its optional signature, then CRC, compressed and uncompressed sizes
    /// (8 bytes each where `wide`: ZIP64).
    fn descriptor(&mut self, wide: bool) -> Result<(u32, u64, u64), EntryError> {
        let peek = self.r.fill_buf().map_err(stream_err)?;
        if peek.len() >= 4 && u32_at(peek, 0) == DATA_DESCRIPTOR {
            self.r.consume(4);
        }
        let mut d = [0u8; 20];
        let len = if wide { 20 } else { 12 };
        self.r.read_exact(&mut d[..len]).map_err(stream_err)?;
        Ok(if wide {
            (u32_at(&d, 0), u64_at(&d, 12), u64_at(&d, 4))
        } else {
            (
                u32_at(&d, 0),
                u64::from(u32_at(&d, 8)),
                u64::from(u32_at(&d, 4)),
            )
        })
    }
}

#[cfg(test)]
#[path = "zip_stream_tests.rs"]
mod tests;
