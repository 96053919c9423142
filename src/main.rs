use clap::{CommandFactory as _, FromArgMatches as _};

use ram_authenticator::cli::Cli;
use ram_authenticator::exit;

fn main() -> std::process::ExitCode {
    // One crypto provider for every TLS user in the process (server, STS client, kube client).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Usage errors exit 2 (clap's code), --help and --version 0.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(ram_authenticator::cli::run(cli, &matches)) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) if ram_authenticator::output::is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", exit::render(&e));
            std::process::ExitCode::from(exit::code(&e))
        }
    }
}
