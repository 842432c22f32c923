//! Completion notices: one subscription per store, for all its keys.
//!
//! # Protocol
//!
//! COMPLETE and ABANDON (and REMOVE of a flight) publish the record's Redis
//! key on the store's channel. One background task per store holds a
//! dedicated pub/sub connection from the caller's `Client`, subscribed to
//! that channel, and wakes the waiters registered for the key it names.
//!
//! Notices are hints (rule 26): pub/sub delivers at most once, and nothing
//! arrives while the subscription reconnects. A waiter therefore registers
//! *before* it reads the record (so a notice between its read and its
//! sleep still wakes it: `Notified::enable`), and sleeps at most its
//! jittered backoff, re-reading the record after every wake. A lost notice
//! costs at most one backoff, never a hang.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;

/// A key's waiters: what wakes them, and how many listen.
type Listeners = (Arc<Notify>, usize);

/// Waiters by the Redis key they wait on; an entry lives while a
/// [`Listener`] holds it.
#[derive(Default)]
pub(crate) struct Notices {
    keys: Mutex<HashMap<Vec<u8>, Listeners>>,
}

/// A waiter's registration; deregisters on drop.
pub(crate) struct Listener {
    notices: Arc<Notices>,
    key: Vec<u8>,
    pub(crate) notify: Arc<Notify>,
}

impl Notices {
    pub(crate) fn listen(self: &Arc<Self>, key: &[u8]) -> Listener {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let entry = keys
            .entry(key.to_vec())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Listener {
            notices: self.clone(),
            key: key.to_vec(),
            notify: entry.0.clone(),
        }
    }

    fn wake(&self, key: &[u8]) {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((notify, _)) = keys.get(key) {
            notify.notify_waiters();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut keys = self.notices.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = keys.get_mut(&self.key) {
            entry.1 -= 1;
            if entry.1 == 0 {
                keys.remove(&self.key);
            }
        }
    }
}

/// The subscription: reconnects (with a pause) whenever its connection
/// ends, until the store (the last strong `Notices`) is gone.
pub(crate) async fn subscribe(
    client: redis::Client,
    channel: Vec<u8>,
    notices: Weak<Notices>,
    timeout: Duration,
) {
    let mut pause = Duration::from_millis(20);
    loop {
        if notices.strong_count() == 0 {
            return;
        }
        let connected = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(pubsub)) = connected {
            pause = Duration::from_millis(20);
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(notices) = notices.upgrade() else {
                    return;
                };
                notices.wake(message.get_payload_bytes());
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
