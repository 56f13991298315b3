//! `query-frontend`: the query-frontend role alone, on Cortex's defaults.
fn main() -> std::process::ExitCode {
    cortex::main_with(cortex::Config::for_role("query-frontend"))
}
