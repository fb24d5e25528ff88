//! `tantra completions bash|zsh|fish|powershell|elvish`: a shell completion script on stdout,
//! generated from the same clap definitions that parse the command line (so it never falls
//! behind). Installing it is one line per shell (see README).

use std::process::ExitCode;

use clap_complete::Shell;

#[derive(clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, powershell or elvish.
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let mut cmd = super::command();
    clap_complete::generate(a.shell, &mut cmd, "tantra", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
