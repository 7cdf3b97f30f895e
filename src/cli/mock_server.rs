//! `xnatfs mock-server`: the mock XNAT server alone.

use super::shared::runtime;
use crate::mock::data::{Dataset, SampleSpec};
use crate::mock::{MockOptions, MockState, RangeMode};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct MockServerArgs {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Serve this folder (<project>/<session>/scans/<scan>/resources/<label>/files/...)
    /// instead of the sample data.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// User name the server accepts.
    #[arg(long, default_value = "demo")]
    pub user: String,
    /// Password the server accepts.
    #[arg(
        long,
        default_value = "demo",
        env = "XNATFS_MOCK_PASSWORD",
        hide_env_values = true
    )]
    pub password: String,
    /// Latency added to every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// How file bodies answer HTTP Range: restlet, as production XNAT's Restlet 1.1 does
    /// (206 with the asked Content-Range, but the whole file from byte 0); honour, as a
    /// caching proxy in front would (206 and the asked bytes); ignore, as a proxy that strips
    /// Range would (200 and the whole file).
    #[arg(long, value_enum, default_value_t = RangeArg::Restlet)]
    pub range: RangeArg,
    /// The same as --range honour.
    #[arg(long, conflicts_with = "range")]
    pub honour_range: bool,
    /// A resource (by numeric ID) whose catalog the server cannot read, as XNAT with a
    /// corrupt or locked catalog.xml: its files listing, ZIP and bodies, and every listing
    /// that includes it (files?all=true, scans/ALL/files), answer 404. Repeatable.
    #[arg(long, value_name = "RESOURCE_ID")]
    pub unreadable_catalog: Vec<u64>,
    /// Close a keep-alive connection idle this many seconds when the next request comes over
    /// it, unanswered (Tomcat's connectionTimeout, 20 s in XNAT's docker-compose, crossing a
    /// client's reuse of the connection). 0: never.
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    pub close_idle_after: u64,
    /// End a keep-alive connection after this many answers, saying `Connection: close` on
    /// the last (Tomcat's maxKeepAliveRequests, 100 by default). 0: never.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub max_keepalive_requests: u64,
    /// Seconds of idleness after which a JSESSION expires.
    #[arg(long, default_value_t = 900)]
    pub token_ttl: u64,
    /// DICOM files per DICOM resource in the sample data.
    #[arg(long, default_value_t = SampleSpec::default().dicom_files)]
    pub dicom_files: usize,
    /// Bytes per DICOM file in the sample data.
    #[arg(long, default_value_t = SampleSpec::default().dicom_size)]
    pub dicom_size: u64,
    /// Bytes of each NIfTI image in the sample data.
    #[arg(long, default_value_t = SampleSpec::default().nifti_size)]
    pub nifti_size: u64,
    /// Scans per MR session in the sample data.
    #[arg(long, default_value_t = SampleSpec::default().scans)]
    pub scans: usize,
    /// Add project COHORT of this many small sessions (2 scans of 3 files, one session
    /// resource each) to the sample data, for benchmarks of whole cohorts.
    #[arg(long, default_value_t = 0)]
    pub cohort: usize,
    /// Add project BIDSDEMO of this many subjects of two sessions of BIDS data each (as
    /// dcm2bids-session leaves them in XNAT), and one session of each other case the BIDS
    /// view handles, for `mount --bids` and its benchmark.
    #[arg(long, default_value_t = 0)]
    pub bids_subjects: usize,
    /// Percentage of requests that go wrong (500s, bodies cut short, 2 s stalls).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub fault_percent: u32,
    /// Serve XNAT under this path (like /xnat), as many sites do.
    #[arg(long, default_value = "")]
    pub context_path: String,
    /// Allow guest access: a request without a live session is served as the guest user
    /// (who sees no data) instead of being refused.
    #[arg(long)]
    pub guest: bool,
    /// Failed logins in a row that lock the account for an hour (0: never), as XNAT's
    /// maxFailedLogins.
    #[arg(long, default_value_t = 20)]
    pub max_failed_logins: u32,
    /// Also listen on this port of the same address, redirecting every request to the server
    /// (as a site's http:// front redirects to its https:// address).
    #[arg(long)]
    pub redirect_port: Option<u16>,
}

/// `--range`: how file bodies answer HTTP Range (see [`RangeMode`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeArg {
    Restlet,
    Honour,
    Ignore,
}

pub fn cmd_mock_server(args: MockServerArgs) -> Result<()> {
    let data = match &args.data {
        Some(dir) => Dataset::from_dir(dir)
            .with_context(|| format!("cannot read the data folder {}", dir.display()))?,
        None => Dataset::sample(&SampleSpec {
            dicom_files: args.dicom_files,
            dicom_size: args.dicom_size,
            nifti_size: args.nifti_size,
            scans: args.scans,
        })
        .with_cohort(args.cohort)
        .with_bids(args.bids_subjects),
    };
    let options = MockOptions {
        user: args.user.clone(),
        password: args.password.clone(),
        token_ttl: Duration::from_secs(args.token_ttl),
        context_path: args.context_path.trim_end_matches('/').to_string(),
        guest: args.guest,
        max_failed_logins: args.max_failed_logins,
        ..MockOptions::default()
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.bind, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
        let state = MockState::new(data, options);
        state
            .controls
            .latency_ms
            .store(args.latency_ms, std::sync::atomic::Ordering::SeqCst);
        state
            .controls
            .set_range(match (args.honour_range, args.range) {
                (true, _) | (_, RangeArg::Honour) => RangeMode::Honour,
                (_, RangeArg::Restlet) => RangeMode::Restlet,
                (_, RangeArg::Ignore) => RangeMode::Ignore,
            });
        state.controls.close_idle_ms.store(
            args.close_idle_after * 1000,
            std::sync::atomic::Ordering::SeqCst,
        );
        state.controls.max_keepalive_requests.store(
            args.max_keepalive_requests,
            std::sync::atomic::Ordering::SeqCst,
        );
        for id in &args.unreadable_catalog {
            state.controls.make_catalog_unreadable(*id);
        }
        state
            .controls
            .fault_percent
            .store(args.fault_percent, std::sync::atomic::Ordering::SeqCst);
        let addr = listener.local_addr()?;
        // Scripts read this line to learn the port.
        println!(
            "mock XNAT server listening on http://{addr} (user {}, password set)",
            args.user
        );
        let _front = match args.redirect_port {
            Some(port) => {
                let front = crate::mock::RedirectFront::start(
                    std::net::SocketAddr::new(args.bind, port),
                    &format!("http://{addr}"),
                )
                .with_context(|| format!("cannot listen on {}:{port}", args.bind))?;
                println!("redirecting http://{} to http://{addr}", front.addr);
                Some(front)
            }
            None => None,
        };
        use std::io::Write;
        let _ = std::io::stdout().flush();
        crate::mock::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    })
}
