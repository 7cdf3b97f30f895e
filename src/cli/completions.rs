//! `xnatfs completions SHELL`: shell completions, generated from the command line's definition.

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (elvish and powershell too).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Prints the completions of the command line `cli` for the shell asked.
pub fn cmd_completions(args: CompletionsArgs, mut cli: clap::Command) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "xnatfs", &mut script);
    super::shared::print(&script)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn completions_know_the_commands_and_their_flags() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut super::super::Cli::command(), "xnatfs", &mut out);
            let text = String::from_utf8(out).unwrap();
            // Fish names long flags without their dashes.
            for word in [
                "mount",
                "prefetch",
                "status",
                "unmount",
                "cache-dir",
                "lazy",
            ] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
        }
    }
}
