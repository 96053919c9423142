//! `sts-emulator`: a stand-in for Alibaba Cloud STS. All logic is in `ram_authenticator::emulator`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = ram_authenticator::emulator::Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sts-emulator: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let code = runtime.block_on(ram_authenticator::emulator::run(args));
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
