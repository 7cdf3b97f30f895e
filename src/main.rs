fn main() {
    std::process::exit(xnatfs::cli::main());
}
