//! The subcommands, one file each. Each `run` returns the exit code: 0 success, 1 a check that
//! found something (differences, unsafe files, problems), errors become 2 in `main`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tantra_formats::{Progress, TensorSource};

mod convert;
mod create_weights;
mod diff;
mod export_gguf;
mod export_hf;
mod import_hf;
mod inspect;
mod run;
mod scan;
// The weights root (tantra-store).
mod backups;
mod checkpoint;
mod cleanup;
mod completions;
mod config;
mod cp;
mod du;
mod list_weights;
mod log;
mod man;
mod pull;
mod push;
mod register;
mod remote;
mod remote_gc;
mod remote_ls;
mod remove;
mod repair;
mod restore;
mod set_default;
mod show;
mod tag;
mod verify;
mod versions;

/// tantra: load, convert, check, version and ship model weights.
#[derive(Parser)]
#[command(name = "tantra", version, about, long_about = None)]
pub struct Cli {
    /// The weights root (default: $TANTRA_ROOT, else ./Model). Before or after the command.
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Print only data and errors: no confirmations, hints, speeds or progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line against [`command`] (exits with clap's message on a mistake).
    pub fn parse_args() -> Cli {
        use clap::FromArgMatches;
        Cli::from_arg_matches(&command().get_matches()).unwrap_or_else(|e| e.exit())
    }

    /// The weights root: `--root`, else `TANTRA_ROOT`, else `./Model`.
    ///
    /// `TANTRA_ROOT` is read here rather than by clap: an argument with an `env` that is set
    /// counts as given, and clap then writes `--root <DIR>` into the usage line of every error,
    /// as if it were required.
    ///
    /// # Errors
    /// `TANTRA_ROOT` set but empty.
    pub fn root(&self) -> anyhow::Result<PathBuf> {
        if let Some(r) = &self.root {
            return Ok(r.clone());
        }
        match std::env::var_os("TANTRA_ROOT") {
            Some(v) if v.is_empty() => anyhow::bail!(
                "TANTRA_ROOT is set but empty: set it to the weights root, or unset it for ./Model"
            ),
            Some(v) => Ok(PathBuf::from(v)),
            None => Ok(PathBuf::from("Model")),
        }
    }
}

/// The subcommands that never read the weights root. `--root` is global (it may come before
/// or after the command), so clap gives it to every subcommand; these get a hidden copy
/// instead, so that their help and usage do not offer an option they ignore.
const WITHOUT_ROOT: &[&str] = &["completions", "man"];

/// The command-line definition: [`Cli`] with `--root` hidden where it means nothing. Parsing,
/// completions and the man page all use this one.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let root = cmd
        .get_arguments()
        .find(|a| a.get_id() == "root")
        .cloned()
        .map(|a| a.hide(true));
    if let Some(root) = root {
        for name in WITHOUT_ROOT {
            if cmd.find_subcommand(name).is_some() {
                // Present before clap propagates the global one, which then skips it.
                let hidden = root.clone();
                cmd = cmd.mut_subcommand(name, |s| s.arg(hidden));
            }
        }
    }
    cmd
}

#[derive(Subcommand)]
pub enum Command {
    /// List registered versions with their formats (--all-formats: one row per file);
    /// `--remote NAME` lists a remote's versions.
    #[command(visible_aliases = ["ls", "list"])]
    ListWeights(list_weights::Args),
    /// Register a weight file as MODEL:VERSION (validated, hashed, optionally converted).
    Register(register::Args),
    /// List the versions of a model.
    Versions(versions::Args),
    /// Everything about one version: files, tensors, config, tags, lineage, history.
    Show(show::Args),
    /// Make a version the model's default.
    SetDefault(set_default::Args),
    /// Add or remove a tag of a version.
    Tag(tag::Args),
    /// Remove a version or one of its formats (backed up first unless --no-backup).
    #[command(visible_alias = "rm")]
    Remove(remove::Args),
    /// List backups of overwritten or removed files; `backups rm ID...` deletes them.
    Backups(backups::Args),
    /// Name a version's weights MODEL2:VERSION2 as well, without copying (hard links).
    Cp(cp::Args),
    /// Bytes used by weights, backups and checkpoints, and what is shared.
    Du(du::Args),
    /// Restore a backup to where it was.
    Restore(restore::Args),
    /// Training checkpoints: save, list, prune, promote.
    #[command(subcommand)]
    Checkpoint(checkpoint::Action),
    /// Retention and removal of orphans and temp files (--dry-run to preview).
    Cleanup(cleanup::Args),
    /// Re-hash registered files and check all metadata; exit 1 on any problem.
    Verify(verify::Args),
    /// Fix what verify finds: registry, files, digests, checkpoint records (--dry-run first).
    Repair(repair::Args),
    /// The history of registry changes (who, when, command, what changed).
    Log(log::Args),
    /// Model configurations: list, show, set, validate, check, import.
    #[command(subcommand)]
    Config(config::Action),
    /// Show the tensors of a weight file (any format).
    Inspect(inspect::Args),
    /// Convert a weight file to safetensors, pt or bin, verified.
    Convert(convert::Args),
    /// Compare the tensors of two weight files (exit 1 when they differ).
    Diff(diff::Args),
    /// Check pickles for anything but plain tensors, without loading them (exit 1 if unsafe).
    Scan(scan::Args),
    /// Run a model: a prompt (and an image) in, generated text out, with its speed.
    Run(run::Args),
    /// Create the small sample weights of the models (all formats), with configs, registered.
    CreateSampleWeights(create_weights::Args),
    /// Create full-size weights of the models (all formats), with configs, registered.
    CreateModelWeights(create_weights::Args),
    /// Write a registered mamba version as a Hugging Face directory (config.json + safetensors).
    ExportHf(export_hf::Args),
    /// Write a registered mamba version as a llama.cpp GGUF (llama.cpp's names and keys).
    ExportGguf(export_gguf::Args),
    /// Register a Hugging Face Mamba directory (safetensors or pytorch_model.bin) as a version.
    ImportHf(import_hf::Args),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(completions::Args),
    /// Print the manual page, or write one per command with --dir.
    Man(man::Args),
    /// Remotes (S3-compatible stores): add, list, remove, gc.
    #[command(subcommand)]
    Remote(remote::Action),
    /// Send a version to a remote, each distinct tensor once.
    Push(push::Args),
    /// Fetch a version from a remote, verified, rebuilt byte for byte, registered.
    Pull(pull::Args),
}

/// Runs the command. An error comes back with its causes as sources (library errors never
/// repeat their source in their own text); [`error_line`] renders it.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    dispatch(cli)
}

/// The one line `main` prints after `error: `: each level of the chain once, outermost first,
/// joined by `": "` ([`tantra_formats::chain`], the same text the Python exceptions carry).
pub fn error_line(e: &anyhow::Error) -> String {
    let top: &(dyn std::error::Error + 'static) = e.as_ref();
    tantra_formats::chain(top).to_string()
}

/// Runs `f` on each tensor index of `src` in order, drawing one `label` bar over the tensors'
/// bytes (advanced as each tensor is done, ended on success and on error alike); returns
/// `f`'s results or its first error.
pub(crate) fn with_bar<T, E>(
    progress: &dyn Progress,
    label: &str,
    src: &dyn TensorSource,
    mut f: impl FnMut(usize) -> Result<T, E>,
) -> Result<Vec<T>, E> {
    let sizes: Vec<u64> = src
        .tensors()
        .iter()
        .map(|t| t.byte_len().unwrap_or(0))
        .collect();
    progress.begin(label, sizes.iter().fold(0u64, |a, &b| a.saturating_add(b)));
    let out = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let r = f(i);
            progress.advance(n);
            r
        })
        .collect();
    progress.end();
    out
}

/// `mamba` or `mamba:VERSION` for the exports, which only the mamba model has: the version, if
/// given. `what` names the layout the command writes, for the error.
pub(crate) fn mamba_target<'a>(
    spec: &'a str,
    command: &str,
    what: &str,
) -> anyhow::Result<Option<&'a str>> {
    let r = tantra_store::ModelRef::parse(spec)?;
    let (model, version) = (r.model.as_str(), r.version.is_some());
    let arch = tantra_models::Architecture::parse(model)?;
    if arch != tantra_models::Architecture::Mamba {
        anyhow::bail!("{command} writes {what}, which only the mamba model has (got {arch}); copy other weights with `tantra convert`");
    }
    Ok(if version {
        spec.split_once(':').map(|(_, v)| v)
    } else {
        None
    })
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    crate::say::set_quiet(cli.quiet);
    // The commands of WITHOUT_ROOT work whatever TANTRA_ROOT holds.
    let root = match cli.command {
        Command::Completions(_) | Command::Man(_) => PathBuf::new(),
        _ => cli.root()?,
    };
    match cli.command {
        Command::ListWeights(a) => list_weights::run(a, &root),
        Command::Register(a) => register::run(a, &root),
        Command::Versions(a) => versions::run(a, &root),
        Command::Show(a) => show::run(a, &root),
        Command::SetDefault(a) => set_default::run(a, &root),
        Command::Tag(a) => tag::run(a, &root),
        Command::Remove(a) => remove::run(a, &root),
        Command::Backups(a) => backups::run(a, &root),
        Command::Cp(a) => cp::run(a, &root),
        Command::Du(a) => du::run(a, &root),
        Command::Restore(a) => restore::run(a, &root),
        Command::Checkpoint(a) => checkpoint::run(a, &root),
        Command::Cleanup(a) => cleanup::run(a, &root),
        Command::Verify(a) => verify::run(a, &root),
        Command::Repair(a) => repair::run(a, &root),
        Command::Log(a) => log::run(a, &root),
        Command::Config(a) => config::run(a, &root),
        Command::CreateSampleWeights(a) => {
            create_weights::run(a, &root, tantra_models::Preset::SampleSmall)
        }
        Command::CreateModelWeights(a) => {
            create_weights::run(a, &root, tantra_models::Preset::Full)
        }
        Command::ExportHf(a) => export_hf::run(a, &root),
        Command::ExportGguf(a) => export_gguf::run(a, &root),
        Command::ImportHf(a) => import_hf::run(a, &root),
        Command::Inspect(a) => inspect::run(a, &root),
        Command::Convert(a) => convert::run(a, &root),
        Command::Diff(a) => diff::run(a, &root),
        Command::Scan(a) => scan::run(a, &root),
        Command::Remote(a) => remote::run(a, &root),
        Command::Push(a) => push::run(a, &root),
        Command::Pull(a) => pull::run(a, &root),
        Command::Run(a) => run::run(a, &root),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::error_line;

    /// Every command and argument a user can see has help text, and the definitions pass
    /// clap's own consistency checks.
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        let cmd = super::Cli::command();
        cmd.clone().debug_assert();
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() && s.get_long_about().is_none() && s.get_name() != "help"
                {
                    missing.push(format!("{path} {}", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&cmd, "tantra", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn an_error_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
        let e = anyhow::Error::new(tantra_store::StoreError::io("/x.pt", io));
        assert_eq!(error_line(&e), "/x.pt: I/O error: No such file");
        let e = anyhow::anyhow!("bad value").context("a.json: not valid JSON");
        assert_eq!(error_line(&e), "a.json: not valid JSON: bad value");
        // Three levels: a store error over a format error over an io::Error; context on top.
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "failed to fill buffer");
        let format = tantra_formats::FormatError::new("/w/a.safetensors", io);
        let store = tantra_store::StoreError::from(format);
        let e = anyhow::Error::new(store).context("register tiny:v1");
        assert_eq!(
            error_line(&e),
            "register tiny:v1: /w/a.safetensors: I/O error: failed to fill buffer"
        );
    }
}
