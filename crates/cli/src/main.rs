//! `hearth`: run open-weight language models locally.

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod cmd;
mod insight;
mod template_sandbox;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // The chat-template helper (see template_sandbox): not a user command.
    if std::env::args_os().nth(1).as_deref() == Some(template_sandbox::SUBCOMMAND.as_ref()) {
        return match template_sandbox::serve_one() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let cli = cmd::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`hearth tokenize … | head`) is not a failure.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
