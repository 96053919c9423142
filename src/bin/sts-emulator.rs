fn main() {
    eprintln!("sts-emulator: not built yet");
    std::process::exit(1);
}
