//! Following a held key: the lost signal fires when the key itself goes
//! (deleted by another client or an operator, or its lease revoked), as
//! soon as the deletion's event arrives, not only at the next keepalive.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::watch::{create_request, key_exists};
use crate::client::Client;
use crate::types::Revision;
use crate::wire::mvccpb::event::EventType;

/// A task that watches one held key; dropping this stops it.
pub(crate) struct Follower {
    gone: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Starts following `key`, created at `rev`: one watch on the client's
    /// stream, from the revision after `rev` (so a deletion that came
    /// before this call is seen too).
    pub(crate) fn start(client: &Client, key: &str, rev: Revision) -> Follower {
        let (tx, gone) = watch::channel(false);
        let task = tokio::spawn(follow(client.clone(), key.as_bytes().to_vec(), rev, tx));
        Follower { gone, task }
    }

    /// Whether the key is known to be gone.
    pub(crate) fn is_gone(&self) -> bool {
        *self.gone.borrow()
    }

    /// A receiver of "the key is gone" (its sender goes when this
    /// follower is dropped).
    pub(crate) fn receiver(&self) -> watch::Receiver<bool> {
        self.gone.clone()
    }

    /// Resolves once the key is known to be gone.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn gone(&self) {
        let mut rx = self.gone.clone();
        if rx.wait_for(|g| *g).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Watches `key` until an event shows it deleted or replaced (another
/// create revision). When the watch ends (its start was compacted, etcd
/// cancelled it, or it fell behind), the key is read, and watched again
/// from the read's revision.
async fn follow(client: Client, key: Vec<u8>, rev: Revision, gone: watch::Sender<bool>) {
    let mut from = rev.0 + 1;
    loop {
        let mut w = client.watch(create_request(&key, Vec::new(), Revision(from)));
        while let Some(resp) = w.recv().await {
            if resp.canceled {
                break;
            }
            for ev in &resp.events {
                let Some(kv) = &ev.kv else { continue };
                if ev.r#type == EventType::Delete as i32 || kv.create_revision != rev.0 {
                    let _ = gone.send(true);
                    return;
                }
                from = from.max(kv.mod_revision + 1);
            }
        }
        match key_exists(&client, &key, rev, 0).await {
            Ok(read) if !read.exists => {
                let _ = gone.send(true);
                return;
            }
            Ok(read) => from = read.at.0 + 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
