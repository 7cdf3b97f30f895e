//! `xnatfs auth test` (and `xnatfs whoami`): logs in with the server and credentials a mount
//! would use, and says who and where; exit 3 when the server refuses them, 5 when it cannot
//! be reached.

use super::shared::{ServerFlags, client, runtime};
use crate::settings;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Log in as a mount would, and say as whom and where (exit 3: refused, 5: unreachable).
    #[command(after_help = "Examples:\n  \
        xnatfs auth test\n  \
        xnatfs auth test --profile work\n  \
        XNAT_URL=https://xnat.example.org XNAT_USER=alice xnatfs auth test")]
    Test(AuthTestArgs),
}

#[derive(Args, Debug)]
pub struct AuthTestArgs {
    /// How long to wait for the server (like 30s, 2m).
    #[arg(long, value_parser = crate::units::parse_timeout, default_value = "30s")]
    pub io_timeout: Duration,
    #[command(flatten)]
    pub server: ServerFlags,
}

pub fn cmd_auth(c: AuthCommand) -> Result<()> {
    match c {
        AuthCommand::Test(args) => auth_test(args),
    }
}

pub fn auth_test(args: AuthTestArgs) -> Result<()> {
    let server_args = args.server.server_args();
    let settings = settings::resolve(&server_args, true, true)?;
    let profile = crate::profiles::active(
        crate::profiles::wanted_name(server_args.profile.as_deref()).as_deref(),
    )?;
    let client = client(&settings, args.io_timeout, &args.server)?;
    let rt = runtime()?;
    let result = rt.block_on(client.check_login());
    rt.block_on(async {
        let _ = tokio::time::timeout(Duration::from_secs(3), client.logout()).await;
    });
    result?;
    let who = match (&settings.credentials.user, &settings.credentials.token) {
        (Some(user), _) => format!("as {user}"),
        (None, Some(_)) => "with the session token in XNAT_TOKEN".to_string(),
        (None, None) => "as no one".to_string(),
    };
    let from = profile.map(|p| format!(" ({p})")).unwrap_or_default();
    super::shared::print(format!("ok: logged in to {} {who}{from}\n", settings.url).as_bytes())
}
