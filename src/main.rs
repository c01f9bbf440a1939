//! The `coffer` binary: parse arguments, set up logging, run, exit with a documented code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cli::env_secrets::take();
    cli::alloc::raise_open_files_limit();
    cli::args::forget_empty_env();
    let args = cli::args::Cli::parse();
    cli::alloc::tune_allocator(matches!(args.command, cli::args::Command::Mount { .. }));
    let verbose = args.global.verbose;
    let level = match (args.global.quiet, args.global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        // fuser warns when asked to unmount what `fusermount3 -u` already unmounted.
        .filter_module("fuser", log::LevelFilter::Error)
        // D-Bus message traces would carry keychain secrets.
        .filter_module("zbus", log::LevelFilter::Warn)
        .filter_module("secret_service", log::LevelFilter::Warn)
        // reqsign logs its credential providers with `Debug`, the S3 secret key included;
        // the request signer's traces are no use to a user either.
        .filter_module("reqsign", log::LevelFilter::Warn)
        .filter_module("reqsign_core", log::LevelFilter::Warn)
        .filter_module("reqsign_aws_core", log::LevelFilter::Warn)
        .filter_module("reqsign_aws_v4", log::LevelFilter::Warn)
        .format_timestamp(None)
        .format_target(false)
        .init();
    match cli::run(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) if cli::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            // Errors quote paths, hosts and tags a snapshot (so a store) controls.
            eprintln!("coffer: {}", coffer::safetext::terminal(&cli::error_text(&error)));
            if verbose > 0 {
                if let Some(detail) = cli::store_detail(&error) {
                    eprintln!("coffer: the store's error in full:\n{}", coffer::safetext::terminal(&detail));
                }
            }
            ExitCode::from(cli::exit_code(&error))
        }
    }
}
