//! `xnatfs man`: the manual pages, generated from the command line's definition.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ManArgs {
    /// Print this command's page (xnatfs-mount(1), ...) instead of xnatfs(1).
    pub command: Option<String>,
    /// Write every page (xnatfs.1, xnatfs-mount.1, ...) into this folder instead.
    #[arg(long, conflicts_with = "command")]
    pub out_dir: Option<PathBuf>,
}

/// The command line's definition `cli`, each command with the version (for its page's footer).
fn definition(cli: clap::Command) -> clap::Command {
    cli.mut_subcommands(|c| c.version(env!("CARGO_PKG_VERSION")))
}

/// Prints (or writes) the manual pages of the command line `cli`.
pub fn cmd_man(args: ManArgs, cli: clap::Command) -> Result<()> {
    let mut cli = definition(cli);
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cli, dir))
            .with_context(|| format!("cannot write the pages into {}", dir.display()))?;
        eprintln!("xnatfs: wrote the manual pages into {}", dir.display());
        return Ok(());
    }
    // Built, subcommands are named as their pages are: xnatfs-mount.
    cli.build();
    let page = match &args.command {
        None => cli,
        Some(name) => cli
            .find_subcommand(name)
            .cloned()
            .with_context(|| format!("no command {name}; xnatfs --help lists them"))?,
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page).render(&mut roff)?;
    super::shared::print(&roff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn page(command: Option<&str>) -> String {
        let mut cli = definition(super::super::Cli::command());
        cli.build();
        let cmd = match command {
            None => cli,
            Some(name) => cli.find_subcommand(name).unwrap().clone(),
        };
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn pages_come_from_the_command_line() {
        let main = page(None);
        assert!(
            main.starts_with(".ie \\n(.g .ds Aq"),
            "roff: {}",
            &main[..80]
        );
        assert!(main.contains(".TH xnatfs 1"), "{main}");
        assert!(main.contains("xnatfs\\-status"), "{main}");
        let mount = page(Some("mount"));
        assert!(
            mount.contains(".TH xnatfs-mount 1  \"mount 0.1.0\""),
            "{mount}"
        );
        assert!(mount.contains("\\-\\-cache\\-dir"), "{mount}");
    }
}
