//! A job that must run on one machine at a time: take the lock, do the work
//! in steps, write each result only while the lock is still held, stop at
//! once if the lock is lost, release at the end.
//!
//! ```sh
//! cargo run --example guarded_work -- http://127.0.0.1:2379
//! ```

use std::time::Duration;

use locker::{Client, Error, LockGuard};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".to_owned());
    let client = Client::builder().endpoints([endpoint]).connect().await?;

    let guard = client
        .lock("examples/report")
        .ttl(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .await?;
    println!(
        "holding {} with fencing token {}",
        guard.key(),
        guard.fencing_token()
    );

    // The work stops as soon as the lock can no longer be assumed held.
    let outcome = tokio::select! {
        reason = guard.lost() => Err(format!("lock lost ({reason:?}); stopping")),
        r = work(&guard) => r.map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => {
            guard.release().await?;
            println!("done, released");
        }
        Err(why) => {
            eprintln!("{why}");
            // Reports the loss (an error with `is_lost()`), never success.
            if let Err(e) = guard.release().await {
                eprintln!("release: {e}");
            }
        }
    }
    Ok(())
}

async fn work(guard: &LockGuard) -> Result<(), Error> {
    for step in 1..=3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Applied by etcd only if this guard's key still has its create
        // revision: a holder that lost the lock cannot overwrite the next
        // holder's results.
        guard
            .put("examples/report-result", format!("step {step}"))
            .await?;
        // For a resource outside etcd, send the token along and have the
        // resource refuse tokens smaller than the largest it has seen.
        println!("step {step} written under token {}", guard.fencing_token());
    }
    Ok(())
}
