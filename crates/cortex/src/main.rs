//! `cortex`: every role in one process on embedded defaults (design §5).
fn main() -> std::process::ExitCode {
    cortex::main_with(cortex::Config::embedded())
}
