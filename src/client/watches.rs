//! The client's one `Watch` stream, which carries every watch of the
//! client (and its clones).
//!
//! - Each watch gets an id chosen here (`watch_id` in its create request,
//!   which etcd 3.4 and later honour), never reused on the client: answers
//!   are routed by that id, and a create needs no wait for the one before.
//! - A [`Watch`] handle receives its watch's answers through a bounded
//!   buffer. A watcher that falls that far behind is dropped from the
//!   stream (a cancel is sent) and its handle ends: it reads again and
//!   watches again from where it is, while the other watches go on. The
//!   stream itself is read continuously.
//! - Dropping a `Watch` sends a cancel for its watches.
//! - When the stream breaks, the endpoint is marked down and every watch
//!   is created again on a new stream, from the revision after the last
//!   one it reported (or after its `created` revision); a watch that never
//!   saw `created` starts as it first did. No event is lost and none is
//!   reported twice. A resume whose revision was compacted is cancelled by
//!   etcd with `compact_revision`, which the watcher receives like any
//!   answer (it must read again).
//! - Watches are created with `fragment`: a response too large for one
//!   message comes in parts, joined here before the watcher sees it.
//! - A create etcd refuses comes back without its id (`watch_id` -1), as
//!   the answer to the oldest create the stream has not answered yet. When
//!   the refusal is for the token (the stream keeps the token it was opened
//!   with, and etcd refuses every create on it once that token expired),
//!   the client authenticates again and the stream is opened again, every
//!   watch with it; any other refusal goes to that oldest watcher.
//!
//! The task is started on first use, owned by the client's
//! [`Hubs`](super::hubs::Hubs), and holds a detached client.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{BiStream, Client, paths};
use crate::wire::etcdserverpb as pb;
use crate::wire::etcdserverpb::watch_client::WatchClient;
use crate::wire::mvccpb;
use pb::watch_request::RequestUnion;

/// How many answers a watcher may leave unread before it is dropped.
const BUFFER: usize = 64;

type WatchStream = BiStream<pb::WatchRequest, pb::WatchResponse>;

/// The way to the hub task, kept by the client's `Hubs`.
pub(crate) struct WatchHub {
    cmds: mpsc::UnboundedSender<Cmd>,
    next_id: AtomicI64,
}

enum Cmd {
    Create {
        req: pb::WatchCreateRequest,
        tx: mpsc::Sender<pb::WatchResponse>,
    },
    Cancel(i64),
}

/// One or more watches on the client's stream, whose answers come here in
/// the order etcd sent them. Dropping it cancels them.
pub(crate) struct Watch {
    ids: Vec<i64>,
    /// The hub holds the strong senders: when it lets go of every watch of
    /// this handle, `rx` ends.
    tx: mpsc::WeakSender<pb::WatchResponse>,
    rx: mpsc::Receiver<pb::WatchResponse>,
    client: Client,
}

impl Client {
    /// Starts a watch on the client's shared stream (opened on first use).
    /// `req`'s `watch_id` and `fragment` are set here.
    pub(crate) fn watch(&self, req: pb::WatchCreateRequest) -> Watch {
        let (tx, rx) = mpsc::channel(BUFFER);
        let mut w = Watch {
            ids: Vec::new(),
            tx: tx.downgrade(),
            rx,
            client: self.clone(),
        };
        w.add(req, tx);
        w
    }

    fn watch_hub(&self) -> &WatchHub {
        self.hubs().watches.get_or_init(|| {
            let (cmds, rx) = mpsc::unbounded_channel();
            let hub = Hub {
                client: self.detached(),
                stream: None,
                watches: HashMap::new(),
                unanswered: VecDeque::new(),
                cmds: rx,
                retry_at: None,
                backoff: FIRST_BACKOFF,
            };
            self.hubs().own(tokio::spawn(hub.run()));
            WatchHub {
                cmds,
                next_id: AtomicI64::new(1),
            }
        })
    }
}

impl Watch {
    /// Adds another watch whose answers come to this handle (none, when
    /// the hub has let go of this handle already).
    pub(crate) fn also(&mut self, req: pb::WatchCreateRequest) {
        if let Some(tx) = self.tx.upgrade() {
            self.add(req, tx);
        }
    }

    fn add(&mut self, mut req: pb::WatchCreateRequest, tx: mpsc::Sender<pb::WatchResponse>) {
        let hub = self.client.watch_hub();
        let id = hub.next_id.fetch_add(1, Ordering::Relaxed);
        req.watch_id = id;
        req.fragment = true;
        self.ids.push(id);
        let _ = hub.cmds.send(Cmd::Create { req, tx });
    }

    /// The next answer of one of the watches: `created`, events, or
    /// `canceled` (by etcd: refused, or its start revision compacted).
    /// `None` when this handle was dropped from the stream for reading too
    /// slowly: read again, and watch again.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn recv(&mut self) -> Option<pb::WatchResponse> {
        self.rx.recv().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(hub) = self.client.hubs().watches.get() {
            for id in self.ids.drain(..) {
                let _ = hub.cmds.send(Cmd::Cancel(id));
            }
        }
    }
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const LAST_BACKOFF: Duration = Duration::from_secs(1);

/// One watch as the hub knows it.
struct Entry {
    req: pb::WatchCreateRequest,
    tx: mpsc::Sender<pb::WatchResponse>,
    /// Where a resume starts: 0 until known (then the create is sent as it
    /// first was).
    next: i64,
    /// Whether its `created` was passed on (a resume's is not).
    created: bool,
    /// Events of a fragmented response, until its last part.
    parts: Vec<mvccpb::Event>,
}

impl Entry {
    fn resume_request(&self) -> pb::WatchRequest {
        let mut req = self.req.clone();
        if self.next > 0 {
            req.start_revision = self.next;
        }
        create(req)
    }
}

fn create(req: pb::WatchCreateRequest) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(req)),
    }
}

fn cancel(id: i64) -> pb::WatchRequest {
    pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: id,
        })),
    }
}

struct Hub {
    client: Client,
    stream: Option<WatchStream>,
    watches: HashMap<i64, Entry>,
    /// The creates sent on the stream and not answered yet, oldest first.
    unanswered: VecDeque<i64>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    /// When to open a stream again (after a break or a failed open).
    retry_at: Option<Instant>,
    backoff: Duration,
}

impl Hub {
    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.cmds.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd).await,
                    None => return,
                },
                msg = recv(&mut self.stream) => match msg {
                    Some(resp) => self.on_answer(resp).await,
                    None => self.broken(),
                },
                _ = crate::rt::sleep_until_opt(self.retry_at) => self.open().await,
            }
        }
    }

    async fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Create { req, tx } => {
                let id = req.watch_id;
                let start = req.start_revision;
                let e = Entry {
                    req,
                    tx,
                    next: start,
                    created: false,
                    parts: Vec::new(),
                };
                let msg = e.resume_request();
                self.watches.insert(id, e);
                match &self.stream {
                    Some(s) if s.send(msg).await.is_err() => self.broken(),
                    Some(_) => self.unanswered.push_back(id),
                    None if self.retry_at.is_none() => self.open().await,
                    None => {}
                }
            }
            Cmd::Cancel(id) => self.forget(id).await,
        }
    }

    /// Ends watch `id` here and on the stream.
    async fn forget(&mut self, id: i64) {
        if self.watches.remove(&id).is_some()
            && let Some(s) = &self.stream
        {
            let _ = s.send(cancel(id)).await;
        }
    }

    /// Routes one answer to its watcher.
    async fn on_answer(&mut self, mut resp: pb::WatchResponse) {
        if resp.watch_id == -1 && resp.canceled {
            return self.on_refused(resp).await;
        }
        self.backoff = FIRST_BACKOFF;
        let id = resp.watch_id;
        if resp.created {
            self.unanswered.retain(|u| *u != id);
        }
        let Some(e) = self.watches.get_mut(&id) else {
            return; // a watch cancelled meanwhile
        };
        if resp.fragment {
            e.parts.append(&mut resp.events);
            return;
        }
        if !e.parts.is_empty() {
            let rest = std::mem::take(&mut resp.events);
            resp.events = std::mem::take(&mut e.parts);
            resp.events.extend(rest);
        }
        if resp.canceled {
            let e = self.watches.remove(&id).expect("present");
            let _ = e.tx.try_send(resp);
            return;
        }
        if let Some(last) = resp.events.last().and_then(|ev| ev.kv.as_ref()) {
            e.next = e.next.max(last.mod_revision + 1);
        }
        if resp.created {
            if e.next == 0 {
                let at = resp.header.as_ref().map_or(0, |h| h.revision);
                e.next = at + 1;
            }
            if std::mem::replace(&mut e.created, true) {
                return; // a resume's
            }
        } else if resp.events.is_empty() {
            return; // progress
        }
        if e.tx.try_send(resp).is_err() {
            // Too slow (or gone): let go of every watch of its handle,
            // which then ends.
            let tx = e.tx.clone();
            let ids: Vec<i64> = self
                .watches
                .iter()
                .filter(|(_, e)| e.tx.same_channel(&tx))
                .map(|(id, _)| *id)
                .collect();
            drop(tx);
            for id in ids {
                self.forget(id).await;
            }
        }
    }

    /// A create refused without its id: the oldest unanswered one's. For
    /// the token: authenticate again and open the stream again (the
    /// refused watch is still here, and is created again with the others),
    /// waiting longer each time it happens in a row. Otherwise the refusal
    /// goes to its watcher.
    async fn on_refused(&mut self, mut resp: pb::WatchResponse) {
        let oldest = self.unanswered.pop_front();
        if super::failure::asks_reauth(&resp.cancel_reason) {
            // Refused again after this, the creates say so again.
            let _ = self.client.authenticate().await;
            self.reopen(Instant::now() + self.backoff);
            self.backoff = (self.backoff * 2).min(LAST_BACKOFF);
            return;
        }
        if let Some(id) = oldest
            && let Some(e) = self.watches.remove(&id)
        {
            resp.watch_id = id;
            let _ = e.tx.try_send(resp);
        }
    }

    /// The stream broke: mark its endpoint down and open another at once.
    fn broken(&mut self) {
        if let Some(s) = &self.stream {
            self.client.mark_down(s.endpoint());
        }
        self.reopen(Instant::now());
    }

    /// Lets go of the stream; another opens at `at`, with every watch.
    fn reopen(&mut self, at: Instant) {
        self.stream = None;
        self.unanswered.clear();
        for e in self.watches.values_mut() {
            e.parts.clear();
        }
        self.retry_at = Some(at);
    }

    /// Opens a stream and creates every watch on it (the first one as the
    /// stream's first message).
    async fn open(&mut self) {
        self.retry_at = None;
        self.watches.retain(|_, e| !e.tx.is_closed());
        let mut ids: Vec<i64> = self.watches.keys().copied().collect();
        ids.sort_unstable();
        let mut creates: Vec<pb::WatchRequest> = ids
            .iter()
            .map(|id| self.watches[id].resume_request())
            .collect();
        if creates.is_empty() {
            return;
        }
        let first = creates.remove(0);
        let opened = self
            .client
            .open_stream(
                paths::WATCH,
                || first.clone(),
                |ch, r| async move { WatchClient::new(ch).watch(r).await },
            )
            .await;
        match opened {
            Ok(s) => {
                self.unanswered = ids.into();
                for msg in creates {
                    if s.send(msg).await.is_err() {
                        break;
                    }
                }
                self.stream = Some(s);
            }
            Err(_) => {
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(LAST_BACKOFF);
            }
        }
    }
}

/// The next answer of the stream; `None` when it ended or broke (and
/// never, while there is no stream).
async fn recv(stream: &mut Option<WatchStream>) -> Option<pb::WatchResponse> {
    match stream {
        Some(s) => s.recv().await.ok().flatten(),
        None => std::future::pending().await,
    }
}
