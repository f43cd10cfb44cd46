//! A service of which one instance is active at a time: each instance
//! campaigns, the elected one does the work while it leads, writes its
//! results only under its leadership, stops at once when leadership is
//! lost, and resigns on Ctrl-C so that the next instance takes over at once.
//!
//! Run two or three of these against one etcd and stop the active one:
//!
//! ```sh
//! cargo run --example leader -- http://127.0.0.1:2379 instance-a
//! cargo run --example leader -- http://127.0.0.1:2379 instance-b
//! ```

use std::time::Duration;

use locker::wire::etcdserverpb as pb;
use locker::{Client, Error, Leadership};

const ELECTION: &str = "examples/service-primary";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:2379".to_owned());
    let me = args
        .next()
        .unwrap_or_else(|| format!("instance-{}", std::process::id()));
    let client = Client::builder().endpoints([endpoint]).connect().await?;

    loop {
        println!("{me}: campaigning for {ELECTION}");
        let campaign = client
            .campaign(ELECTION, me.as_str())
            .ttl(Duration::from_secs(5));
        let mut leader = tokio::select! {
            l = campaign => l?,
            _ = tokio::signal::ctrl_c() => return Ok(()), // nothing is left behind
        };
        println!(
            "{me}: leading as {} with fencing token {}",
            leader.key(),
            leader.fencing_token()
        );
        leader.proclaim(format!("{me} (serving)")).await?;

        // Work only while leading: the work future is dropped the moment
        // the lost signal fires, which is before etcd can elect anyone else.
        let outcome = tokio::select! {
            reason = leader.lost() => Outcome::Lost(format!("{reason:?}")),
            r = serve(&leader, &me) => match r {
                Ok(()) => Outcome::Done,
                Err(e) if e.is_lost() => Outcome::Lost(e.to_string()),
                Err(e) => Outcome::Failed(e),
            },
            _ = tokio::signal::ctrl_c() => Outcome::Interrupted,
        };
        match outcome {
            Outcome::Lost(why) => {
                // Someone else may lead now: stop, and campaign again.
                eprintln!("{me}: leadership lost ({why}); stopped serving");
                drop(leader);
            }
            Outcome::Done | Outcome::Interrupted => {
                leader.resign().await?;
                println!("{me}: resigned");
                return Ok(());
            }
            Outcome::Failed(e) => {
                // Resign so that another instance takes over at once.
                let _ = leader.resign().await;
                return Err(e.into());
            }
        }
    }
}

enum Outcome {
    Lost(String),
    Done,
    Interrupted,
    Failed(Error),
}

/// The leader's work: a tick every second, each one recorded in etcd only
/// while this instance still leads (a deposed leader's late write is
/// refused), for ten ticks.
async fn serve(leader: &Leadership, me: &str) -> Result<(), Error> {
    for tick in 1..=10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let put = pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: b"examples/service-state".to_vec(),
                value: format!("tick {tick} by {me}").into_bytes(),
                ..Default::default()
            })),
        };
        leader.txn(vec![put]).await?;
        // For a resource outside etcd, pass the token along and have it
        // refuse tokens smaller than the largest it has seen.
        println!("{me}: tick {tick} (token {})", leader.fencing_token());
    }
    Ok(())
}
