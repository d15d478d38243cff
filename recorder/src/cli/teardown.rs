//! `flightrec teardown`: detach the programs and remove the pinned rings.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use super::ConfigArgs;

#[derive(Args)]
pub(crate) struct TeardownArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// bpffs directory of the pins (overrides recorder.pin_dir).
    #[arg(long, value_name = "DIR")]
    pin_dir: Option<PathBuf>,
}

pub(crate) fn run(args: TeardownArgs) -> Result<ExitCode> {
    let mut config = args.config.load()?;
    if let Some(dir) = args.pin_dir {
        config.recorder.pin_dir = dir;
    }
    let dir = &config.recorder.pin_dir;
    if flightrec::rings::teardown(dir)? {
        eprintln!(
            "flightrec: removed pinned rings and programs in {}",
            dir.display()
        );
    } else {
        eprintln!("flightrec: nothing pinned in {}", dir.display());
    }
    Ok(ExitCode::SUCCESS)
}
