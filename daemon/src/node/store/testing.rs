//! Helpers for the store's unit tests: a small upload, a read, a runtime.
#![allow(clippy::unwrap_used)]

use super::{Store, now_ms};
use std::sync::Arc;

pub(super) fn put(store: &Arc<Store>, rt: &tokio::runtime::Runtime, name: &str, data: &[u8]) {
    let mut buf = Store::small_record_buffer(name, data.len() as u64);
    buf.extend_from_slice(data);
    rt.block_on(store.put_small(name, now_ms(), false, buf))
        .unwrap();
}

pub(super) fn get(store: &Store, name: &str) -> Option<Vec<u8>> {
    let loc = store.lookup(name)?;
    Some(store.read_small(&loc).unwrap().to_vec())
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
