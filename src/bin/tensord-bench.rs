//! tensord-bench: load generator for Open Inference Protocol servers (see `--help`).

use clap::Parser;

fn main() {
    let options = tensord::loadgen::Options::parse();
    match tensord::loadgen::run(&options) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}
