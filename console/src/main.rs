//! `backpack-console <zk_servers> </zk/root>`: see the crate docs.

fn main() -> std::process::ExitCode {
    backpack_console::main_entry()
}
