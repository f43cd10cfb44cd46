//! Following held keys: the lost signal fires when a key itself goes
//! (deleted by another client or an operator, or its lease revoked), as
//! soon as the deletion's event arrives, not only at the next keepalive.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::watch::{create_request, key_exists};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::session::{LostReason, SessionInner};
use crate::types::Revision;
use crate::wire::mvccpb::event::EventType;

/// The lost signal of held keys, all created at one revision (one key for
/// a guard, every name's key for a set): the lease's signal, or a key's
/// own deletion. The keys are followed from the first question on (one
/// watch each on the client's stream); a guard nobody asks sends nothing.
pub(crate) struct LostSignal {
    keys: Vec<String>,
    rev: Revision,
    follower: OnceLock<Follower>,
}

impl LostSignal {
    pub(crate) fn new(keys: Vec<String>, rev: Revision) -> LostSignal {
        LostSignal {
            keys,
            rev,
            follower: OnceLock::new(),
        }
    }

    /// The keys' follower, started on first use (not outside a runtime).
    fn follower(&self, session: &SessionInner) -> Option<&Follower> {
        if let Some(f) = self.follower.get() {
            return Some(f);
        }
        tokio::runtime::Handle::try_current().ok()?;
        let client = &session.client;
        Some(
            self.follower
                .get_or_init(|| Follower::start(client, &self.keys, self.rev)),
        )
    }

    /// Whether a key was seen deleted (only once something asked).
    pub(crate) fn key_gone(&self) -> bool {
        self.follower.get().is_some_and(Follower::is_gone)
    }

    /// `Ok` unless a key was seen deleted; then the lease's loss if it is
    /// lost, else [`Error::LockLost`] naming the first key (a guarded write
    /// would fail anyway: nothing is sent).
    ///
    /// # Errors
    /// As said.
    pub(crate) fn check_keys(&self, session: &SessionInner) -> Result<()> {
        if self.key_gone() {
            session.check_alive()?;
            return Err(Error::LockLost {
                key: self.keys[0].clone(),
            });
        }
        Ok(())
    }

    /// Whether the keys are known to be lost: the lease (judged by the
    /// clock) or, once followed, a key. Starts following the keys.
    pub(crate) fn lost_now(&self, session: &SessionInner) -> Option<LostReason> {
        session.lost().or_else(|| {
            self.follower(session)
                .is_some_and(Follower::is_gone)
                .then_some(LostReason::KeyDeleted)
        })
    }

    /// Resolves when the keys are lost: the lease's signal, or a key's
    /// deletion event. Starts following the keys.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn wait_lost(&self, session: &SessionInner) -> LostReason {
        let Some(f) = self.follower(session) else {
            return session.wait_lost().await;
        };
        tokio::select! {
            r = session.wait_lost() => r,
            _ = f.gone() => session.lost().unwrap_or(LostReason::KeyDeleted),
        }
    }

    /// [`wait_lost`](Self::wait_lost) as a `'static` future;
    /// [`LostReason::Closed`] once the follower is gone (with its guard).
    pub(crate) fn signal(
        &self,
        session: &SessionInner,
    ) -> impl std::future::Future<Output = LostReason> + Send + 'static {
        let lease = session.lost_signal();
        let gone = self.follower(session).map(Follower::receiver);
        async move {
            let Some(mut gone) = gone else {
                return lease.await;
            };
            tokio::select! {
                r = lease => r,
                g = gone.wait_for(|g| *g) => match g {
                    Ok(_) => LostReason::KeyDeleted,
                    Err(_) => LostReason::Closed,
                },
            }
        }
    }
}

/// A task that watches held keys; dropping this stops it.
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
    /// Starts following `keys`, all created at `rev`: one watch each on
    /// the client's stream, from the revision after `rev` (so a deletion
    /// that came before this call is seen too). "Gone" once any one goes.
    pub(crate) fn start(client: &Client, keys: &[String], rev: Revision) -> Follower {
        let (tx, gone) = watch::channel(false);
        let mut each = JoinSet::new();
        for key in keys {
            each.spawn(until_gone(client.clone(), key.as_bytes().to_vec(), rev));
        }
        let task = tokio::spawn(async move {
            // Dropped with this task (when the follower is), `each` aborts
            // the other keys' watches.
            if each.join_next().await.is_some() {
                let _ = tx.send(true);
            }
        });
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
/// create revision), then returns. When the watch ends (its start was
/// compacted, etcd cancelled it, or it fell behind), the key is read, and
/// watched again from the read's revision.
async fn until_gone(client: Client, key: Vec<u8>, rev: Revision) {
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
                    return;
                }
                from = from.max(kv.mod_revision + 1);
            }
        }
        match key_exists(&client, &key, rev, 0).await {
            Ok(read) if !read.exists => return,
            Ok(read) => from = read.at.0 + 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
