//! The command line: parsing and wiring only. Each command hands off to the module that does
//! the work.

use crate::cache::default_cache_dir;
use crate::mock::data::{Dataset, SampleSpec};
use crate::mock::{MockOptions, MockServer};
use crate::mount::{self, MountOptions, Unmounted};
use crate::settings::{self, ServerArgs, Settings};
use crate::xnat::XnatApi;
use crate::xnat::http::{ClientOptions, HttpXnat};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "xnatfs",
    version,
    about = "Mount an XNAT server read-only as folders",
    long_about = "Mount an XNAT server read-only as ordinary folders: listings come lazily from XNAT's REST API,\n\
                  file contents are fetched on first read into an on-disk cache.\n\n\
                  Layout: <session>/scans/<scan>/resources/<label>/files/<name...>\n        \
                  <session>/resources/<label>/files/<name...>\n\n\
                  The server and credentials come from XNAT_URL, XNAT_USER, XNAT_PASS (or XNAT_TOKEN),\n\
                  --url/--user, a profile in ~/.config/xnatfs/config.toml, or ~/.netrc.",
    after_help = "Examples:\n  \
                  xnatfs demo                                  # try it with the built-in demo server\n  \
                  export XNAT_URL=https://xnat.example.org XNAT_USER=alice\n  \
                  xnatfs mount ~/xnat                          # all projects you can read\n  \
                  xnatfs mount ~/xnat -P MYPROJ                # one project's sessions\n  \
                  xnatfs mount ~/xnat -E XNAT_E00001 -E XNAT_E00002\n  \
                  xnatfs unmount ~/xnat"
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mount XNAT on a folder (returns once the mount is ready; serves in the background).
    #[command(after_help = "Examples:\n  \
        xnatfs mount /mnt/xnat\n  \
        xnatfs mount /mnt/xnat -P MYPROJ\n  \
        xnatfs mount /mnt/xnat -P MYPROJ -E SUBJ01_MR1\n  \
        xnatfs mount /mnt/xnat -E XNAT_E00001 --foreground -v")]
    Mount(MountArgs),
    /// Download whole sessions, chosen scans or filtered resources in parallel, verified.
    #[command(
        after_help = "Into the mount's cache by default (a mount then reads them with no request, even offline),\n\
        or with --out into plain folders: DIR/<session>/scans/<scan>/resources/<label>/files/...\n\n\
        Examples:\n  \
        xnatfs prefetch -E XNAT_E00001                          # a whole session, into the cache\n  \
        xnatfs prefetch -P MYPROJ -E SUBJ01_MR1 -s 1,2 -r DICOM  # scans 1 and 2, DICOM only\n  \
        xnatfs prefetch -P MYPROJ --out ./data -w 8              # every session of a project\n  \
        xnatfs prefetch -E XNAT_E00001 --session-resources --exclude-resource SNAPSHOTS --dry-run\n\n\
        Exit status: 0 only when every planned file is present and verified."
    )]
    Prefetch(PrefetchArgs),
    /// Show or clear the on-disk cache.
    #[command(
        subcommand,
        after_help = "Examples:\n  xnatfs cache stats\n  xnatfs cache clear --url https://xnat.example.org"
    )]
    Cache(CacheCommand),
    /// Unmount a folder mounted by xnatfs.
    Unmount {
        /// The folder to unmount.
        mountpoint: PathBuf,
    },
    /// Start the built-in demo XNAT server and mount it: see xnatfs work with no server.
    #[command(after_help = "Examples:\n  \
        xnatfs demo                   # mounts on /tmp/xnatfs-demo until Ctrl-C\n  \
        xnatfs demo ~/demo --once     # mount, list, unmount, exit")]
    Demo {
        /// Where to mount (created if missing).
        #[arg(default_value = "/tmp/xnatfs-demo")]
        mountpoint: PathBuf,
        /// List the mount, then unmount and exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Run the mock XNAT server alone (for tests, demos and other tools).
    #[command(
        name = "mock-server",
        after_help = "Examples:\n  \
        xnatfs mock-server --port 8080              # sample data, user demo / password demo\n  \
        xnatfs mock-server --data ./tree --latency-ms 20"
    )]
    MockServer(MockServerArgs),
}

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Files, bytes and kept listings per server.
    Stats {
        /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
        #[arg(long)]
        cache_dir: Option<PathBuf>,
    },
    /// Delete cached files and listings (of one server with --url, else of all).
    Clear {
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Only this server's area.
        #[arg(long)]
        url: Option<String>,
    },
}

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
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The folder to mount on (must exist and be empty).
    pub mountpoint: PathBuf,
    /// Show this project's sessions at the root (labels in -E are looked up here).
    #[arg(short = 'P', long)]
    pub project: Option<String>,
    /// Show just this session (accession ID, or label with -P); repeatable.
    #[arg(short = 'E', long = "session")]
    pub sessions: Vec<String>,
    /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Stay attached; Ctrl-C or SIGTERM unmounts.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Seconds listings are kept before they are asked again.
    #[arg(long, default_value_t = 60)]
    pub dir_ttl: u64,
    /// Seconds any one wait for the server may take before the operation fails.
    #[arg(long, default_value_t = 30)]
    pub io_timeout: u64,
    /// Log file when in the background (default: <cache dir>/xnatfs.log).
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// No server at all: serve what was browsed or prefetched before, from the cache.
    #[arg(long)]
    pub offline: bool,
    /// Cap on the cache's size (like 500M or 50G); least recently used files not open are
    /// evicted (default: 20G, or less to keep 10% of the disk free).
    #[arg(long, value_parser = crate::budget::parse_size)]
    pub cache_size: Option<u64>,
    /// Memory downloads may hold at once (like 256M); past it they slow down to wait.
    #[arg(long, value_parser = crate::budget::parse_size, default_value = "512M")]
    pub max_memory: u64,
    /// Let other users read the mount (it is private to you by default; as non-root this
    /// needs user_allow_other in /etc/fuse.conf).
    #[arg(long)]
    pub allow_other: bool,
    #[command(flatten)]
    pub server: ServerFlags,
    /// Internal: run as the background child of `xnatfs mount`.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PrefetchArgs {
    /// Session: accession ID, or label with -P (repeatable). Without -E, every session of -P.
    #[arg(short = 'E', long = "session")]
    pub sessions: Vec<String>,
    /// Project: where labels are looked up; alone, all its sessions.
    #[arg(short = 'P', long)]
    pub project: Option<String>,
    /// Scans: IDs like 1,2,3, or '*' for all.
    #[arg(short = 's', long = "scans", default_value = "*")]
    pub scans: String,
    /// Only these resource labels (repeatable, or comma-separated).
    #[arg(
        short = 'r',
        long = "resource",
        value_delimiter = ',',
        conflicts_with = "exclude_resource"
    )]
    pub resources: Vec<String>,
    /// Not these resource labels (repeatable, or comma-separated).
    #[arg(long = "exclude-resource", value_delimiter = ',')]
    pub exclude_resource: Vec<String>,
    /// Also the session-level resources (QC, PROTOCOLS, ...).
    #[arg(long)]
    pub session_resources: bool,
    /// Parallel transfers.
    #[arg(short = 'w', long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub workers: u16,
    /// Write plain files under DIR instead of the mount's cache.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// With --out and one session: the session's folder name (default: its label).
    #[arg(long, requires = "out")]
    pub name: Option<String>,
    /// Cache dir (default: $XDG_CACHE_HOME/xnatfs or ~/.cache/xnatfs).
    #[arg(long, conflicts_with = "out")]
    pub cache_dir: Option<PathBuf>,
    /// Print the plan (sessions, scans, resources, files, bytes, what is present); transfer nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to fetch: ZIP per resource where it pays, or one request per file.
    #[arg(long, value_enum, default_value = "auto")]
    pub method: crate::prefetch::transfer::Method,
    /// Seconds without progress before a transfer is given up (after retries).
    #[arg(long, default_value_t = 30)]
    pub io_timeout: u64,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub server: ServerFlags,
}

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
    /// Honour HTTP Range on file bodies (XNAT itself does not).
    #[arg(long)]
    pub honour_range: bool,
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
    /// Percentage of requests that go wrong (500s, bodies cut short, 2 s stalls).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub fault_percent: u32,
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // fuser warns about an unmount that already happened; its real errors still show.
        tracing_subscriber::EnvFilter::new(format!(
            "{default},fuser=error,hyper=warn,reqwest=warn,h2=warn"
        ))
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Runs the command line; the return value is the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Mount(args) => cmd_mount(args, cli.verbose),
        Command::Prefetch(args) => cmd_prefetch(args),
        Command::Unmount { mountpoint } => cmd_unmount(&mountpoint),
        Command::Cache(c) => cmd_cache(c),
        Command::Demo { mountpoint, once } => cmd_demo(&mountpoint, once),
        Command::MockServer(args) => cmd_mock_server(args),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("xnatfs: {e:#}");
            1
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("xnatfs-io")
        .build()
        .context("cannot start the I/O runtime")
}

fn client(settings: &Settings, io_timeout: Duration, insecure: bool) -> Result<Arc<HttpXnat>> {
    if insecure {
        tracing::warn!("--insecure: TLS certificates are not checked");
    }
    let options = ClientOptions {
        timeout: io_timeout,
        insecure,
        ..ClientOptions::default()
    };
    Ok(Arc::new(HttpXnat::new(
        &settings.url,
        settings.credentials.clone(),
        options,
    )?))
}

fn cmd_prefetch(args: PrefetchArgs) -> Result<()> {
    use crate::prefetch::plan::{Destination, ScanSelector, Selection};
    let server = ServerArgs {
        url: args.server.url.clone(),
        user: args.server.user.clone(),
        profile: args.server.profile.clone(),
    };
    let settings = settings::resolve(&server, true, true)?;
    let selection = Selection {
        scans: ScanSelector::parse(&args.scans)?,
        include: args.resources.clone(),
        exclude: args.exclude_resource.clone(),
        session_resources: args.session_resources,
    };
    let destination = match &args.out {
        Some(root) => {
            std::fs::create_dir_all(root)
                .with_context(|| format!("cannot create {}", root.display()))?;
            if let Some(name) = &args.name
                && !crate::names::is_safe_component(name)
            {
                bail!("--name {name:?} is not a usable folder name");
            }
            Destination::Out {
                root: root.clone(),
                name: args.name.clone(),
            }
        }
        None => {
            let dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
            Destination::Cache(
                crate::cache::Cache::open(&dir, &settings.url)
                    .with_context(|| format!("cannot use the cache dir {}", dir.display()))?,
            )
        }
    };
    let io_timeout = Duration::from_secs(args.io_timeout.max(1));
    let client = client(&settings, io_timeout, args.server.insecure)?;
    // Into the cache, the listings are kept too, so a mount can serve these sessions offline.
    let api: Arc<dyn XnatApi> = match &destination {
        Destination::Cache(cache) => Arc::new(
            crate::listings::RememberingApi::new(
                client.clone(),
                cache.area().join("listings"),
                false,
            )
            .context("cannot use the cache dir")?,
        ),
        Destination::Out { .. } => client.clone(),
    };
    let opts = crate::prefetch::PrefetchOptions {
        sessions: args.sessions.clone(),
        project: args.project.clone(),
        default_project: settings.default_project.clone(),
        selection,
        destination,
        workers: usize::from(args.workers),
        method: args.method,
        dry_run: args.dry_run,
        io_timeout,
        quiet: args.quiet,
    };
    let rt = runtime()?;
    let outcome = rt.block_on(async {
        tokio::select! {
            r = crate::prefetch::run(api, &opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    rt.block_on(client.logout());
    match outcome {
        None => {
            eprintln!(
                "xnatfs: prefetch interrupted; no partial file was left under its final name; run it again to finish"
            );
            rt.shutdown_timeout(Duration::from_secs(1));
            std::process::exit(130);
        }
        Some(Ok(true)) => Ok(()),
        Some(Ok(false)) => bail!(
            "prefetch incomplete: some files failed (listed above); run it again to retry them"
        ),
        Some(Err(e)) => Err(e),
    }
}

fn cmd_cache(c: CacheCommand) -> Result<()> {
    use crate::prefetch::plan::human_bytes;
    match c {
        CacheCommand::Stats { cache_dir } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let areas = crate::cache::stats(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?;
            println!("cache: {}", dir.display());
            if areas.is_empty() {
                println!("(empty)");
            }
            for a in &areas {
                println!(
                    "{:<40} {:>8} files {:>12} {:>6} listings {:>4} partial",
                    a.area,
                    a.files,
                    human_bytes(a.bytes),
                    a.listings,
                    a.partial
                );
            }
            let (files, bytes): (u64, u64) = areas
                .iter()
                .fold((0, 0), |(f, b), a| (f + a.files, b + a.bytes));
            println!("total: {files} files, {}", human_bytes(bytes));
        }
        CacheCommand::Clear { cache_dir, url } => {
            let dir = cache_dir.unwrap_or_else(default_cache_dir);
            let cleared = crate::cache::clear(&dir, url.as_deref())
                .with_context(|| format!("cannot clear {}", dir.display()))?;
            let (files, bytes): (u64, u64) = cleared
                .iter()
                .fold((0, 0), |(f, b), a| (f + a.files, b + a.bytes));
            eprintln!(
                "xnatfs: cleared {files} files ({}) from {}",
                human_bytes(bytes),
                dir.display()
            );
        }
    }
    Ok(())
}

fn cmd_unmount(mountpoint: &Path) -> Result<()> {
    match mount::unmount(mountpoint)? {
        Unmounted::Clean => eprintln!("xnatfs: unmounted {}", mountpoint.display()),
        Unmounted::Lazy => eprintln!(
            "xnatfs: {} is busy; detached it (it goes away when the last file on it is closed)",
            mountpoint.display()
        ),
    }
    Ok(())
}

fn cmd_mount(args: MountArgs, verbose: u8) -> Result<()> {
    let server = ServerArgs {
        url: args.server.url.clone(),
        user: args.server.user.clone(),
        profile: args.server.profile.clone(),
    };
    let settings = settings::resolve(&server, !args.daemon_child, !args.offline)?;
    mount::prepare_mountpoint(&args.mountpoint)?;
    let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    if !args.foreground {
        return spawn_background(&args, &settings, &cache_dir, verbose);
    }
    let result = mount_and_serve(&args, &settings, &cache_dir);
    if args.daemon_child
        && let Err(e) = &result
    {
        // The parent is waiting on our stdout for the verdict.
        println!("error: {e:#}");
    }
    result
}

/// Mounts and serves in this process until unmounted.
fn mount_and_serve(args: &MountArgs, settings: &Settings, cache_dir: &Path) -> Result<()> {
    let rt = runtime()?;
    let io_timeout = Duration::from_secs(args.io_timeout.max(1));
    let client = client(settings, io_timeout, args.server.insecure)?;
    let (cache, api) = mount::open_cache_and_api(
        client.clone() as Arc<dyn XnatApi>,
        cache_dir,
        &settings.url,
        args.offline,
        io_timeout,
        Duration::from_secs(args.dir_ttl),
    )?;
    let root = rt.block_on(async {
        if !args.offline {
            client.check_login().await?;
        }
        mount::resolve_root(
            api.as_ref(),
            args.project.as_deref(),
            settings.default_project.as_deref(),
            &args.sessions,
        )
        .await
    })?;
    let opts = MountOptions {
        mountpoint: args.mountpoint.clone(),
        dir_ttl: Duration::from_secs(args.dir_ttl),
        io_timeout,
        threads: 4,
        allow_other: args.allow_other,
        max_memory: args.max_memory,
    };
    let budget = cache.budget();
    let limit = args
        .cache_size
        .unwrap_or_else(|| crate::budget::default_limit(cache.area(), budget.used()));
    budget.set_limit(limit);
    tracing::info!(
        "cache: {} used of a {} cap",
        crate::prefetch::plan::human_bytes(budget.used()),
        crate::prefetch::plan::human_bytes(limit)
    );
    let session = mount::mount(&rt, api, cache.clone(), root, &opts)?;
    if args.daemon_child {
        println!("ready");
        detach_stdout();
    } else {
        eprintln!(
            "xnatfs: mounted {} on {} (Ctrl-C to unmount)",
            settings.url,
            args.mountpoint.display()
        );
    }
    let served = mount::serve(&rt, session, &args.mountpoint);
    if let Err(e) = cache.budget().save() {
        tracing::warn!("cannot save the cache index: {e}");
    }
    rt.block_on(client.logout());
    served
}

/// Points stdout at /dev/null, so the parent's read of it ends.
fn detach_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: both descriptors are valid; dup2 replaces fd 1 atomically.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
        }
    }
}

/// Starts this program again as a detached child that mounts and serves, and waits until it
/// says the mount is ready (or why it failed).
fn spawn_background(
    args: &MountArgs,
    settings: &Settings,
    cache_dir: &Path,
    verbose: u8,
) -> Result<()> {
    use std::os::unix::process::CommandExt;
    std::fs::create_dir_all(cache_dir)
        .with_context(|| format!("cannot create the cache dir {}", cache_dir.display()))?;
    let log_path = args
        .log_file
        .clone()
        .unwrap_or_else(|| cache_dir.join("xnatfs.log"));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the log file {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("mount").arg(&args.mountpoint);
    if let Some(p) = &args.project {
        cmd.arg("-P").arg(p);
    }
    for s in &args.sessions {
        cmd.arg("-E").arg(s);
    }
    cmd.arg("--cache-dir").arg(cache_dir);
    cmd.arg("--dir-ttl").arg(args.dir_ttl.to_string());
    cmd.arg("--io-timeout").arg(args.io_timeout.to_string());
    cmd.arg("--foreground").arg("--daemon-child");
    if args.offline {
        cmd.arg("--offline");
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    if let Some(size) = args.cache_size {
        cmd.arg("--cache-size").arg(size.to_string());
    }
    cmd.arg("--max-memory").arg(args.max_memory.to_string());
    if args.server.insecure {
        cmd.arg("--insecure");
    }
    for _ in 0..verbose.max(1) {
        cmd.arg("-v");
    }
    // The child gets the resolved server and credentials through its environment, never argv.
    cmd.env("XNAT_URL", &settings.url);
    let creds = &settings.credentials;
    for (name, value) in [
        ("XNAT_USER", &creds.user),
        ("XNAT_PASS", &creds.password),
        ("XNAT_TOKEN", &creds.token),
    ] {
        match value {
            Some(v) => cmd.env(name, v),
            None => cmd.env_remove(name),
        };
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves our session and terminal so that
    // Ctrl-C in this shell does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the background mount")?;
    let stdout = child
        .stdout
        .take()
        .context("no pipe to the background mount")?;
    let mut verdict = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        if line == "ready" {
            verdict = Some(Ok(()));
            break;
        }
        if let Some(msg) = line.strip_prefix("error: ") {
            verdict = Some(Err(anyhow::anyhow!("{msg}")));
        }
    }
    match verdict {
        Some(Ok(())) => {
            eprintln!(
                "xnatfs: mounted {} on {} (log: {}; unmount with: xnatfs unmount {})",
                settings.url,
                args.mountpoint.display(),
                log_path.display(),
                args.mountpoint.display()
            );
            Ok(())
        }
        Some(Err(e)) => {
            let _ = child.wait();
            Err(e)
        }
        None => {
            let status = child.wait()?;
            bail!(
                "the background mount exited ({status}) before it was ready; see {}",
                log_path.display()
            )
        }
    }
}

fn cmd_mock_server(args: MockServerArgs) -> Result<()> {
    let data = match &args.data {
        Some(dir) => Dataset::from_dir(dir)
            .with_context(|| format!("cannot read the data folder {}", dir.display()))?,
        None => Dataset::sample(&SampleSpec {
            dicom_files: args.dicom_files,
            dicom_size: args.dicom_size,
            nifti_size: args.nifti_size,
            scans: args.scans,
        }),
    };
    let options = MockOptions {
        user: args.user.clone(),
        password: args.password.clone(),
        token_ttl: Duration::from_secs(args.token_ttl),
        ..MockOptions::default()
    };
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.bind, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.bind, args.port))?;
        let state = crate::mock::MockState::new(data, options);
        state
            .controls
            .latency_ms
            .store(args.latency_ms, std::sync::atomic::Ordering::SeqCst);
        state
            .controls
            .honour_range
            .store(args.honour_range, std::sync::atomic::Ordering::SeqCst);
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
        use std::io::Write;
        let _ = std::io::stdout().flush();
        crate::mock::serve(listener, state, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        Ok(())
    })
}

fn cmd_demo(mountpoint: &Path, once: bool) -> Result<()> {
    std::fs::create_dir_all(mountpoint)
        .with_context(|| format!("cannot create {}", mountpoint.display()))?;
    mount::prepare_mountpoint(mountpoint)?;
    let server = MockServer::start(
        "127.0.0.1:0".parse().expect("a valid address"),
        Dataset::sample(&SampleSpec::default()),
        MockOptions::default(),
    )
    .context("cannot start the demo server")?;
    let url = server.url();
    eprintln!("xnatfs demo: mock XNAT server at {url} (user demo, password demo)");
    let cache = tempfile::Builder::new()
        .prefix("xnatfs-demo-cache-")
        .tempdir()
        .context("cannot create a cache dir")?;
    let settings = Settings {
        url: url.clone(),
        credentials: crate::xnat::http::Credentials {
            user: Some("demo".into()),
            password: Some("demo".into()),
            token: None,
        },
        default_project: None,
    };
    let rt = runtime()?;
    let client = client(&settings, Duration::from_secs(30), false)?;
    let (cache_area, api) = mount::open_cache_and_api(
        client as Arc<dyn XnatApi>,
        cache.path(),
        &url,
        false,
        Duration::from_secs(30),
        Duration::from_secs(60),
    )?;
    let root = rt.block_on(mount::resolve_root(api.as_ref(), None, None, &[]))?;
    let opts = MountOptions {
        mountpoint: mountpoint.to_path_buf(),
        dir_ttl: Duration::from_secs(60),
        io_timeout: Duration::from_secs(30),
        threads: 4,
        allow_other: false,
        max_memory: crate::fetcher::DEFAULT_MAX_MEMORY,
    };
    let session = mount::mount(&rt, api, cache_area, root, &opts)?;
    let shown = mountpoint.to_path_buf();
    let lister = std::thread::spawn(move || {
        let result = show_demo(&shown);
        if once {
            let _ = mount::unmount(&shown);
        }
        result
    });
    eprintln!("xnatfs demo: mounted on {}", mountpoint.display());
    let served = mount::serve(&rt, session, mountpoint);
    let shown = lister
        .join()
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the listing thread panicked")));
    served.and(shown)
}

/// Prints what the demo mount holds, through the mount itself.
fn show_demo(root: &Path) -> Result<()> {
    let ls = |p: &Path| -> Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(p)
            .with_context(|| format!("cannot list {}", p.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        Ok(names)
    };
    println!("$ ls {}", root.display());
    for project in ls(root)? {
        println!("{project}/");
        for session in ls(&root.join(&project))? {
            println!("  {session}/");
        }
    }
    let session = root.join("DEMO").join("SUBJ01_MR1");
    println!(
        "\n$ find {} -type f | head -12   (sizes from the listings; nothing downloaded)",
        session.display()
    );
    fn walk(dir: &Path, out: &mut Vec<(u64, PathBuf)>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let meta = e.metadata()?;
            if meta.is_dir() {
                walk(&e.path(), out)?;
            } else {
                out.push((meta.len(), e.path()));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(&session, &mut files)?;
    for (size, path) in files.iter().take(12) {
        println!("{size:>10}  {}", path.display());
    }
    println!("... {} files in all", files.len());
    let report = session.join("resources/QC/files/qc_report.html");
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("cannot read {}", report.display()))?;
    println!(
        "\n$ head -c 80 {}\n{}",
        report.display(),
        &text[..text.len().min(80)]
    );
    println!(
        "\nxnatfs demo: try `ls -lR {}` or `md5sum {}/DEMO/SUBJ01_MR1/scans/2/resources/NIFTI/files/*` in another shell",
        root.display(),
        root.display()
    );
    Ok(())
}
