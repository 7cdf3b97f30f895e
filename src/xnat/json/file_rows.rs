//! Reading a files listing row by row as it arrives: the streaming serde machinery behind
//! [`super::files_listing`] and the mount's and prefetch's listings, which hands each row to
//! a [`FileRowSink`] once whole and never holds a 200,000-row listing as rows. Also how an
//! HTML page is told from JSON ([`looks_like_html`]).

use crate::xnat::XnatError;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// Whether a body is an HTML page (an error page or XNAT's login page).
pub fn looks_like_html(body: &[u8]) -> bool {
    let start: Vec<u8> = body
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take(15)
        .map(u8::to_ascii_lowercase)
        .collect();
    start.starts_with(b"<!doctype") || start.starts_with(b"<html")
}

/// The fields of a files listing row that xnatfs uses, as text (XNAT sends numbers as
/// strings; a number, a boolean or null is taken as its text, an array or object as its JSON).
/// Borrowed from the listing's body where it is held whole and the JSON string has no escapes.
#[derive(Debug, Default)]
pub struct FileRow<'a> {
    pub name: Cow<'a, str>,
    pub size: Cow<'a, str>,
    pub uri: Cow<'a, str>,
    pub digest: Cow<'a, str>,
    /// The numeric ID of the file's resource.
    pub cat_id: Cow<'a, str>,
}

/// Takes a files listing's rows one at a time, in listing order, as they are parsed: a
/// listing of 200,000 rows is never held as rows, only as what is made of them.
pub trait FileRowSink {
    /// One row; an error ends the listing's reading with that error.
    fn row(&mut self, row: FileRow<'_>) -> Result<(), XnatError>;
}

/// Hands each row of a files listing body held whole to `sink`.
pub fn each_file_row(
    body: &[u8],
    path: &str,
    sink: &mut impl FileRowSink,
) -> Result<(), XnatError> {
    if looks_like_html(body) {
        return Err(not_json(path));
    }
    rows_of(&mut serde_json::Deserializer::from_slice(body), path, sink)
}

/// Hands each row of a files listing to `sink` as it is read from `reader` (the answer as
/// it arrives: see `crate::xnat::streamed`), with no copy of the whole body.
pub fn read_file_rows(
    mut reader: impl std::io::Read,
    path: &str,
    sink: &mut impl FileRowSink,
) -> Result<(), XnatError> {
    use std::io::Read;
    // An error page: what its first bytes show, before any parsing (they are read again).
    let mut head = Vec::new();
    (&mut reader)
        .take(256)
        .read_to_end(&mut head)
        .map_err(|e| bad_listing(path, e.to_string()))?;
    if looks_like_html(&head) {
        return Err(not_json(path));
    }
    // Buffered: the parser takes its input a byte at a time.
    let whole =
        std::io::BufReader::with_capacity(64 << 10, std::io::Cursor::new(head).chain(reader));
    rows_of(
        &mut serde_json::Deserializer::from_reader(whole),
        path,
        sink,
    )
}

fn bad_listing(path: &str, msg: String) -> XnatError {
    XnatError::BadResponse {
        path: path.to_string(),
        msg,
    }
}

fn not_json(path: &str) -> XnatError {
    bad_listing(path, "an HTML page where JSON was expected".into())
}

const NO_RESULT: &str = "no ResultSet.Result in the answer";
const NOT_AN_OBJECT: &str = "a ResultSet row is not an object";

/// How far the reading of a listing got, for the message of a body of the wrong shape.
#[derive(Clone, Copy, PartialEq)]
enum Stage {
    AboveTheRows,
    InARow,
}

/// What a listing's reading keeps besides the sink: where it is, and why it stopped when that
/// was not the JSON's syntax.
struct Reading<'s, S> {
    sink: &'s mut S,
    stage: Stage,
    failed: Option<XnatError>,
}

/// Reads `{"ResultSet": {"Result": [rows]}}` (other keys skipped, in any order) with each row
/// handed to the sink once whole. The same shapes as [`super::result_rows`], with the same messages.
/// A `ResultSet` or `Result` key that comes twice (XNAT never sends one) is read the first
/// time, where the generic reading takes the last: rows handed on cannot be taken back.
fn rows_of<'de, R: serde_json::de::Read<'de>, S: FileRowSink>(
    de: &mut serde_json::Deserializer<R>,
    path: &str,
    sink: &mut S,
) -> Result<(), XnatError> {
    let mut reading = Reading {
        sink,
        stage: Stage::AboveTheRows,
        failed: None,
    };
    let listing = Keyed {
        key: "ResultSet",
        inner: Keyed {
            key: "Result",
            inner: Rows,
        },
    };
    let result = listing.read(&mut reading, &mut *de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(_) if let Some(e) = reading.failed.take() => Err(e),
        Err(e) if e.classify() == serde_json::error::Category::Data => Err(bad_listing(
            path,
            match reading.stage {
                Stage::AboveTheRows => NO_RESULT.into(),
                Stage::InARow => NOT_AN_OBJECT.into(),
            },
        )),
        Err(e) => Err(bad_listing(path, format!("malformed JSON: {e}"))),
    }
}

/// A part of a listing, read with the reading it serves.
trait Seed<S> {
    fn read<'de, D: serde::Deserializer<'de>>(
        self,
        reading: &mut Reading<'_, S>,
        d: D,
    ) -> Result<(), D::Error>;
}

/// An object whose entry `key` is read by `inner`; other entries are skipped; no such entry
/// is a body of the wrong shape.
struct Keyed<T> {
    key: &'static str,
    inner: T,
}

/// A seed for serde that runs a [`Seed`] with its reading.
struct Run<'r, 's, S, T>(&'r mut Reading<'s, S>, T);

impl<'de, S, T: Seed<S>> serde::de::DeserializeSeed<'de> for Run<'_, '_, S, T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.1.read(self.0, d)
    }
}

impl<S, T: Seed<S>> Seed<S> for Keyed<T> {
    fn read<'de, D: serde::Deserializer<'de>>(
        self,
        reading: &mut Reading<'_, S>,
        d: D,
    ) -> Result<(), D::Error> {
        struct Entries<'r, 's, S, T>(&'r mut Reading<'s, S>, Keyed<T>);
        impl<'de, S, T: Seed<S>> serde::de::Visitor<'de> for Entries<'_, '_, S, T> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "an object with {:?}", self.1.key)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                let Entries(reading, Keyed { key, inner }) = self;
                let mut inner = Some(inner);
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    match inner.take_if(|_| k == key) {
                        Some(seed) => map.next_value_seed(Run(&mut *reading, seed))?,
                        None => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                match inner {
                    None => Ok(()),
                    Some(_) => Err(serde::de::Error::custom(NO_RESULT)),
                }
            }
        }
        d.deserialize_map(Entries(reading, self))
    }
}

/// The array of rows, each handed to the sink once read.
struct Rows;

impl<S: FileRowSink> Seed<S> for Rows {
    fn read<'de, D: serde::Deserializer<'de>>(
        self,
        reading: &mut Reading<'_, S>,
        d: D,
    ) -> Result<(), D::Error> {
        struct Each<'r, 's, S>(&'r mut Reading<'s, S>);
        impl<'de, S: FileRowSink> serde::de::Visitor<'de> for Each<'_, '_, S> {
            type Value = ();
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of rows")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                let reading = self.0;
                loop {
                    reading.stage = Stage::InARow;
                    let Some(row) = seq.next_element_seed(OneRow)? else {
                        return Ok(());
                    };
                    reading.stage = Stage::AboveTheRows;
                    if let Err(e) = reading.sink.row(row) {
                        let msg = e.to_string();
                        reading.failed = Some(e);
                        return Err(serde::de::Error::custom(msg));
                    }
                }
            }
        }
        d.deserialize_seq(Each(reading))
    }
}

/// One row: the fields xnatfs uses (the last of a repeated key), others skipped.
struct OneRow;

impl<'de> serde::de::DeserializeSeed<'de> for OneRow {
    type Value = FileRow<'de>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<FileRow<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for OneRow {
    type Value = FileRow<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a row object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileRow<'de>, A::Error> {
        let mut row = FileRow::default();
        while let Some(key) = map.next_key_seed(Key)? {
            let slot = match key {
                Some(Field::Name) => &mut row.name,
                Some(Field::Size) => &mut row.size,
                Some(Field::Uri) => &mut row.uri,
                Some(Field::Digest) => &mut row.digest,
                Some(Field::CatId) => &mut row.cat_id,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value_seed(Text)?;
        }
        Ok(row)
    }
}

enum Field {
    Name,
    Size,
    Uri,
    Digest,
    CatId,
}

/// A row's key: one of the fields xnatfs uses, or `None`; compared where it lies, not copied.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = Option<Field>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Field>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = Option<Field>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<Field>, E> {
        Ok(match v {
            "Name" => Some(Field::Name),
            "Size" => Some(Field::Size),
            "URI" => Some(Field::Uri),
            "digest" => Some(Field::Digest),
            "cat_ID" => Some(Field::CatId),
            _ => None,
        })
    }
}

/// Any JSON value as text, as [`super::field`] takes it: strings as they are (borrowed when they
/// can be), numbers and booleans printed, null as `""`, an array or object as its JSON.
struct Text;

impl<'de> serde::de::DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Cow::Owned(Value::from(v).to_string()))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(""))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(""))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Cow::Owned(v.to_string()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(Cow::Owned(v.to_string()))
    }
}
