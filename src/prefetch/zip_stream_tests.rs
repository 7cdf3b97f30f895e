//! Unit tests of the streaming ZIP reader, on archives in both forms XNAT writes.

use super::*;
use std::io::{Cursor, Write};
use zip::CompressionMethod;
use zip::write::SimpleFileOptions;

fn bodies() -> Vec<(String, Vec<u8>)> {
    vec![
        (
            "S/scans/1-T1/resources/DICOM/files/a.dcm".into(),
            (0..5000u32).map(|i| (i % 251) as u8).collect(),
        ),
        ("S/resources/QC/files/empty.txt".into(), Vec::new()),
        (
            "S/resources/QC/files/b.txt".into(),
            b"hello, hello, hello".repeat(100),
        ),
    ]
}

/// STORED with sizes in the local headers (the zip crate writes them so to a seekable file,
/// as Java's `ZipOutputStream` does for STORED entries).
fn stored() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, body) in bodies() {
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        w.start_file(name, opts).unwrap();
        w.write_all(&body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// DEFLATED with sizes and CRCs only in data descriptors after the data, written as a stream
/// (as Java's `ZipOutputStream` writes DEFLATED entries).
fn deflated(large_file: bool) -> Vec<u8> {
    let mut w = zip::ZipWriter::new_stream(Vec::new());
    for (name, body) in bodies() {
        let opts = SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .large_file(large_file);
        w.start_file(name, opts).unwrap();
        w.write_all(&body).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn read_all(zip: &[u8]) -> Vec<(String, Result<Vec<u8>, String>)> {
    let mut z = ZipStream::new(zip);
    let mut out = Vec::new();
    while let Some(e) = z.next_entry().unwrap() {
        let mut body = Vec::new();
        let got = z.read_data(&e, |c| {
            body.extend_from_slice(c);
            Ok(())
        });
        let name = String::from_utf8(e.name.clone()).unwrap();
        match got {
            Ok(n) => {
                assert_eq!(n, body.len() as u64);
                out.push((name, Ok(body)));
            }
            Err(EntryError::Bad(m)) => out.push((name, Err(m))),
            Err(EntryError::Stream(m)) => panic!("stream broke in {name}: {m}"),
        }
    }
    out
}

#[test]
fn both_forms_read_entry_by_entry() {
    let want: Vec<_> = bodies().into_iter().map(|(n, b)| (n, Ok(b))).collect();
    let s = stored();
    assert_eq!(read_all(&s), want, "STORED");
    let d = deflated(false);
    assert!(d.len() < s.len(), "DEFLATED is smaller");
    let mut z = ZipStream::new(&d[..]);
    let first = z.next_entry().unwrap().unwrap();
    assert_eq!(
        (first.method, first.size),
        (8, None),
        "sizes follow the data"
    );
    assert_eq!(read_all(&d), want, "DEFLATED with data descriptors");
    assert_eq!(read_all(&deflated(true)), want, "ZIP64 data descriptors");
}

#[test]
fn a_damaged_entry_is_never_read_as_good() {
    let name_len = bodies()[0].0.len();
    // Flip a byte of the first entry's data (past its 30-byte header, name and extra field).
    let damage = |mut zip: Vec<u8>| {
        let extra = usize::from(u16_at(&zip, 28));
        zip[30 + name_len + extra + 40] ^= 0x55;
        zip
    };
    // STORED: the CRC says so, and the next entries still read.
    let got = read_all(&damage(stored()));
    assert!(got[0].1.is_err(), "{:?}", got[0].0);
    assert_eq!(got[2].1.as_ref().unwrap(), &bodies()[2].1);
    // DEFLATED: bad, or the stream is lost; never good.
    let zip = damage(deflated(false));
    let mut z = ZipStream::new(&zip[..]);
    let e = z.next_entry().unwrap().unwrap();
    let mut body = Vec::new();
    let got = z.read_data(&e, |c| {
        body.extend_from_slice(c);
        Ok(())
    });
    assert!(got.is_err(), "damaged DEFLATE data read as good");
}

#[test]
fn a_stream_cut_short_is_a_stream_error() {
    for (form, zip) in [("stored", stored()), ("deflated", deflated(false))] {
        let cut = &zip[..200];
        let mut z = ZipStream::new(cut);
        let e = z.next_entry().unwrap().unwrap();
        let got = z.read_data(&e, |_| Ok(()));
        assert!(matches!(got, Err(EntryError::Stream(_))), "{form}: {got:?}");
    }
}

#[test]
fn a_refusing_sink_leaves_the_stream_aligned() {
    let zip = deflated(false);
    let mut z = ZipStream::new(&zip[..]);
    let e = z.next_entry().unwrap().unwrap();
    let got = z.read_data(&e, |_| Err(io::Error::other("disk full")));
    assert!(matches!(got, Err(EntryError::Bad(m)) if m.contains("disk full")));
    let next = z.next_entry().unwrap().unwrap();
    assert_eq!(next.name, bodies()[1].0.as_bytes());
}
