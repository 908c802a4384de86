use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = verdigris::cli::Cli::parse();
    if let Err(e) = verdigris::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
