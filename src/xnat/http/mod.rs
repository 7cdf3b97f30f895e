//! [`HttpXnat`]: the [`XnatApi`] over XNAT's REST API, with a JSESSION cookie that is renewed
//! by itself when the server answers 401 (or its HTML login page). Listings are retried with
//! backoff; file bodies get one attempt per call (see [`super::retry`]).

mod client;
mod endpoints;
mod request;
mod session;

pub use client::{ClientOptions, Credentials, HttpXnat};
pub use endpoints::{IMAGE_SESSIONS, SESSION_COLUMNS};
pub use request::encode_path;
