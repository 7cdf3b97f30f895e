//! The XNAT side: domain types, the small [`XnatApi`] trait the rest of xnatfs is written
//! against, the JSON parsing of XNAT's answers, and the HTTP client that implements the trait.

mod api;
pub mod error;
mod find;
pub mod http;
pub mod json;
pub mod login;
mod model;
mod ranged;
pub mod remembering;
mod remote_file;
pub mod retry;
pub mod session_tree;
mod streamed;
pub mod suggest;
pub mod walk;

pub use api::{XnatApi, config_path};
pub use error::{Result, XnatError};
pub use find::{check_project, find_session, named_sessions, unknown};
pub use model::*;
pub use remote_file::{FileList, Md5, RemoteFile, file_list, same_or_new};
pub use walk::{assessor_trees, derived, session_tree_by_listings, unreadable_files};
