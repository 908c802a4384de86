use clap::Parser;

fn main() {
    verdigris::logging::init();
    let cli = verdigris::cli::Cli::parse();
    if let Err(e) = verdigris::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
