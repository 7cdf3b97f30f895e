//! The command line: parsing and wiring only. Each command has its own file here, with its
//! flags and the few lines that hand off to the module that does the work.

mod auth;
mod cache;
mod completions;
mod config;
mod daemon;
mod demo;
mod exit;
mod helper;
mod man;
mod mock_server;
mod mount;
mod prefetch;
mod shared;
mod status;
mod unmount;

pub use self::auth::{AuthCommand, AuthTestArgs};
pub use self::cache::CacheCommand;
pub use self::completions::CompletionsArgs;
pub use self::config::{AddProfileArgs, ConfigCommand};
pub use self::helper::InstallHelperArgs;
pub use self::man::ManArgs;
pub use self::mock_server::MockServerArgs;
pub use self::mount::MountArgs;
pub use self::prefetch::PrefetchArgs;
pub use self::shared::ServerFlags;
pub use self::status::StatusArgs;
pub use self::unmount::UnmountArgs;

use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

/// `xnatfs --help` after the commands: examples, then the exit status table.
fn top_after_help() -> String {
    format!(
        "Examples:\n  \
                  xnatfs demo                                  # try it with the built-in demo server\n  \
                  export XNAT_URL=https://xnat.example.org XNAT_USER=alice\n  \
                  xnatfs mount ~/xnat                          # all projects you can read\n  \
                  xnatfs mount ~/xnat -P MYPROJ                # one project's sessions\n  \
                  xnatfs mount ~/xnat -E XNAT_E00001 -E XNAT_E00002\n  \
                  xnatfs status                                # what is mounted, from where\n  \
                  xnatfs unmount ~/xnat\n\n\
                  As a mount helper (/etc/fstab, systemd .mount units, mount -t fuse.xnatfs; see\n\
                  xnatfs install-helper), each -o option a mount flag (cache_dir= is --cache-dir):\n  \
                  xnatfs https://xnat.example.org /mnt/xnat -o project=MYPROJ,profile=work,allow_other,_netdev\n\n\
         {}",
        exit::table()
    )
}

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
    after_help = top_after_help()
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
    #[command(after_help = prefetch::after_help())]
    Prefetch(PrefetchArgs),
    /// Show or clear the on-disk cache.
    #[command(
        subcommand,
        after_help = "Examples:\n  xnatfs cache stats\n  xnatfs cache clear --url https://xnat.example.org"
    )]
    Cache(CacheCommand),
    /// Profiles: named servers with their user (and password), default project.
    #[command(
        subcommand,
        after_help = "Profiles live in ~/.config/xnatfs/config.toml; xnatctl's (~/.config/xnatctl/config.yaml)\n\
        are used when no xnatfs profile is set. --profile NAME (or XNATFS_PROFILE, or xnatctl's\n\
        XNAT_PROFILE) picks one.\n\n\
        Examples:\n  \
        xnatfs config add-profile work --url https://xnat.example.org --user alice --default-project MYPROJ\n  \
        xnatfs config list\n  \
        xnatfs config show work\n  \
        xnatfs config use work"
    )]
    Config(ConfigCommand),
    /// Check the server and credentials: log in as a mount would.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Who you are where: the same as `xnatfs auth test`.
    #[command(after_help = "Examples:\n  xnatfs whoami\n  xnatfs whoami --profile work")]
    Whoami(AuthTestArgs),
    /// Unmount a folder mounted by xnatfs (or all of yours).
    #[command(after_help = "Examples:\n  \
        xnatfs unmount ~/xnat\n  \
        xnatfs unmount --lazy ~/xnat     # even while files on it are open\n  \
        xnatfs unmount --all")]
    Unmount(UnmountArgs),
    /// List your xnatfs mounts: server, root, cache, process, downloads in flight.
    #[command(after_help = "Examples:\n  xnatfs status\n  xnatfs status --json")]
    Status(StatusArgs),
    /// Start the built-in demo XNAT server and mount it: see xnatfs work with no server.
    #[command(after_help = "Examples:\n  \
        xnatfs demo                   # mounts on /tmp/xnatfs-demo until Ctrl-C\n  \
        xnatfs demo ~/demo --once     # mount, list, unmount, exit\n  \
        xnatfs demo --bids            # the demo's BIDS project as a BIDS dataset")]
    Demo {
        /// Where to mount (created if missing).
        #[arg(default_value = "/tmp/xnatfs-demo")]
        mountpoint: PathBuf,
        /// List the mount, then unmount and exit instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Mount the demo's BIDS project (BIDSDEMO) as a BIDS dataset, as `mount -P BIDSDEMO
        /// --bids` does.
        #[arg(long)]
        bids: bool,
    },
    /// Run the mock XNAT server alone (for tests, demos and other tools).
    #[command(
        name = "mock-server",
        after_help = "Examples:\n  \
        xnatfs mock-server --port 8080              # sample data, user demo / password demo\n  \
        xnatfs mock-server --data ./tree --latency-ms 20"
    )]
    MockServer(MockServerArgs),
    /// Link /sbin/mount.fuse.xnatfs to this program, for mount -t fuse.xnatfs, /etc/fstab
    /// and systemd .mount units (run as root).
    #[command(
        name = "install-helper",
        after_help = "Then, in /etc/fstab:\n  \
        https://xnat.example.org /mnt/xnat fuse.xnatfs project=MYPROJ,profile=work,allow_other,_netdev,nofail 0 0"
    )]
    InstallHelper(InstallHelperArgs),
    /// Print shell completions (bash, zsh, fish).
    #[command(after_help = "Examples:\n  \
        xnatfs completions bash > ~/.local/share/bash-completion/completions/xnatfs\n  \
        xnatfs completions zsh > ~/.zfunc/_xnatfs\n  \
        xnatfs completions fish > ~/.config/fish/completions/xnatfs.fish")]
    Completions(CompletionsArgs),
    /// Print the manual page (man -l <(xnatfs man)).
    #[command(after_help = "Examples:\n  \
        xnatfs man | man -l -\n  \
        xnatfs man mount | man -l -\n  \
        xnatfs man --out-dir /usr/local/share/man/man1")]
    Man(ManArgs),
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
        // stderr; in the background mount, its log file, rotated by size.
        .with_writer(|| crate::mount::log_file::LogWriter)
        // Never `eprintln!` about a line it could not write: see `LogWriter`.
        .log_internal_errors(false)
        .with_target(false)
        .try_init();
}

/// Runs the command line; the return value is the process exit code.
pub fn main() -> i32 {
    // SAFETY: first thing in main: no other thread runs yet.
    unsafe { crate::settings::take_secrets_from_env() };
    fewer_malloc_arenas();
    let argv: Vec<OsString> = std::env::args_os().collect();
    let argv = match helper::helper_form(&argv) {
        None => argv,
        Some(Ok(helper::Helper::Mount(args))) => {
            // SAFETY: still no other thread.
            unsafe { helper::ensure_home() };
            args
        }
        Some(Ok(helper::Helper::Fake)) => return exit::Exit::Ok.code(),
        Some(Err(e)) => {
            eprintln!("xnatfs: {e:#}");
            return exit::Exit::Usage.code();
        }
    };
    let _ = shared::COMMAND_LINE.set(argv.clone());
    let cli = Cli::parse_from(argv);
    // The background mount logs to its file at info level at least.
    let verbose = if daemon::is_child() {
        cli.verbose.max(1)
    } else {
        cli.verbose
    };
    init_logging(verbose);
    let result = match cli.command {
        Command::Mount(args) => mount::cmd_mount(args),
        Command::Prefetch(args) => return prefetch::cmd_prefetch(args).code(),
        Command::Unmount(args) => unmount::cmd_unmount(args),
        Command::Status(args) => status::cmd_status(args),
        Command::Cache(c) => cache::cmd_cache(c),
        Command::Config(c) => config::cmd_config(c),
        Command::Auth(c) => auth::cmd_auth(c),
        Command::Whoami(args) => auth::auth_test(args),
        Command::Demo {
            mountpoint,
            once,
            bids,
        } => demo::cmd_demo(&mountpoint, once, bids),
        Command::MockServer(args) => mock_server::cmd_mock_server(args),
        Command::InstallHelper(args) => helper::cmd_install_helper(args),
        Command::Completions(args) => completions::cmd_completions(args, Cli::command()),
        Command::Man(args) => man::cmd_man(args, Cli::command()),
    };
    match result {
        Ok(()) => exit::Exit::Ok.code(),
        Err(e) => shared::failed(e).code(),
    }
}

/// xnatfs runs many threads that each parse big listings now and then: glibc's
/// default of one malloc arena per thread keeps freed memory scattered over all of them (a
/// 200,000-file listing cost twice its size in resident memory). Two arenas are plenty.
fn fewer_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before the threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
