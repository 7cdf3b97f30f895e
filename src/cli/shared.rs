//! What the commands share: the server flags and the client they make, the I/O runtime,
//! printing to stdout, an error that ends a command, and the command line being run.

use super::exit;
use crate::settings::{ServerArgs, Settings};
use crate::xnat::http::{ClientOptions, HttpXnat};
use anyhow::{Context, Result};
use clap::Args;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct ServerFlags {
    /// XNAT server URL (default: $XNAT_URL, or the profile's).
    #[arg(long)]
    pub url: Option<String>,
    /// User name (default: $XNAT_USER, the profile's, or ~/.netrc's).
    #[arg(long)]
    pub user: Option<String>,
    /// Profile in ~/.config/xnatfs/config.toml.
    #[arg(long)]
    pub profile: Option<String>,
    /// Accept any TLS certificate (unsafe; for test servers only).
    #[arg(long)]
    pub insecure: bool,
    /// Trust the certificate authorities in this PEM file too (a site with a private CA;
    /// default: $SSL_CERT_FILE).
    #[arg(long, value_name = "PEM")]
    pub ca_bundle: Option<PathBuf>,
}

impl ServerFlags {
    /// What the flags say about the server, for [`crate::settings::resolve`].
    pub fn server_args(&self) -> ServerArgs {
        ServerArgs {
            url: self.url.clone(),
            user: self.user.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// The command line being run: the process's arguments, or the `xnatfs mount` command line
/// that its mount(8) helper form stands for.
pub(super) static COMMAND_LINE: OnceLock<Vec<OsString>> = OnceLock::new();

/// The command line being run (what the background mount runs again).
pub(super) fn command_line() -> Vec<OsString> {
    COMMAND_LINE
        .get()
        .cloned()
        .unwrap_or_else(|| std::env::args_os().collect())
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is no error.
pub(super) fn print(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}

/// Reports an error that ends a command.
pub(super) fn failed(e: anyhow::Error) -> exit::Exit {
    eprintln!("xnatfs: {e:#}");
    exit::Exit::for_error(&e)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("xnatfs-io")
        .build()
        .context("cannot start the I/O runtime")
}

pub(crate) fn client(
    settings: &Settings,
    io_timeout: Duration,
    flags: &ServerFlags,
) -> Result<Arc<HttpXnat>> {
    // --insecure, or the profile says so (xnatctl's verify_ssl: false).
    let insecure = flags.insecure || settings.insecure;
    if insecure {
        tracing::warn!("--insecure: TLS certificates are not checked");
    }
    let ca_bundle = flags.ca_bundle.clone().or_else(|| {
        std::env::var_os("SSL_CERT_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let mut options = ClientOptions {
        timeout: io_timeout,
        insecure,
        ca_bundle,
        ..ClientOptions::default()
    };
    // For tests: how often an XNAT_TOKEN session is touched (seconds; default 5 minutes).
    if let Some(secs) = std::env::var("XNATFS_KEEPALIVE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
    {
        options.keepalive = Duration::from_secs_f64(secs);
    }
    Ok(Arc::new(HttpXnat::new(
        &settings.url,
        settings.credentials.clone(),
        options,
    )?))
}
