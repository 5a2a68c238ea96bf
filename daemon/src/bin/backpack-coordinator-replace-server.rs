//! `backpack-coordinator-replace-server`: see `backpack_daemon::admin`.

fn main() {
    backpack_daemon::admin::main::<backpack_daemon::admin::ReplaceServer>();
}
