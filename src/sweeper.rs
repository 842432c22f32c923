//! The background sweeper: a thread that holds only a `Weak` to the store,
//! so it never keeps a store alive, and exits once the last handle drops
//! (the store's `Drop` unparks it so that happens at once).

use std::hash::{BuildHasher, Hash};
use std::io;
use std::time::Duration;

use crate::store::{Inner, Store};
use crate::sync::{self, Arc, Thread};

pub(crate) fn spawn<K, V, S>(inner: &Arc<Inner<K, V, S>>, interval: Duration) -> io::Result<Thread>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let weak = Arc::downgrade(inner);
    let handle = std::thread::Builder::new()
        .name("idemstore-sweeper".into())
        .spawn(move || loop {
            sync::park_timeout(interval);
            // Hold the store only for the pass, never while parked.
            match weak.upgrade() {
                Some(inner) => {
                    Store { inner }.sweep();
                }
                None => return,
            }
        })?;
    Ok(handle.thread().clone())
}
