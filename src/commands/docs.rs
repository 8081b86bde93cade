//! `slipway completions SHELL` and `slipway man [COMMAND]`: what the shell and `man` read,
//! generated from the clap definition of the commands ([`crate::cli`]), so they never drift
//! from `--help`; `slipway schema`: the JSON Schema of slipway.toml (docs/slipway.schema.json,
//! written by hand next to the raw types of [`crate::config`]). Both print on stdout (and under `--progress json` give the text as the
//! summary's result).

use clap::CommandFactory as _;

use super::Session;
use crate::cli::{Cli, CompletionsArgs, ManArgs};
use crate::error::Fail;

/// `slipway completions bash|zsh|fish|elvish|powershell`: the completion script.
pub fn completions(session: &Session, args: CompletionsArgs) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "slipway", &mut buf);
    emit(session, buf)
}

/// `slipway man [COMMAND]`: slipway(1), or slipway-COMMAND(1).
pub fn man(session: &Session, args: ManArgs) -> anyhow::Result<()> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let page = match &args.command {
        None => cmd,
        Some(name) => cmd.find_subcommand(name).cloned().ok_or_else(|| {
            let names: Vec<&str> = cmd.get_subcommands().map(|c| c.get_name()).collect();
            Fail::usage(format!("no command `{name}`"))
                .hint(format!("one of: {}", names.join(", ")))
        })?,
    };
    let mut buf = Vec::new();
    clap_mangen::Man::new(page)
        // The commit's date (see build.rs), so the page is the same for one commit.
        .date(env!("SLIPWAY_COMMIT_DATE"))
        .manual("slipway manual")
        .render(&mut buf)?;
    emit(session, buf)
}

/// `slipway schema`: the JSON Schema of slipway.toml.
pub fn schema(session: &Session) -> anyhow::Result<()> {
    emit(session, SCHEMA.as_bytes().to_vec())
}

/// docs/slipway.schema.json.
const SCHEMA: &str = include_str!("../../docs/slipway.schema.json");

fn emit(session: &Session, buf: Vec<u8>) -> anyhow::Result<()> {
    let text = String::from_utf8(buf)?;
    session.result(&text);
    session.print(&text);
    Ok(())
}
