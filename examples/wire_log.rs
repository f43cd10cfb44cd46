//! Prints the wire log of one lock cycle: every call locker sends to etcd.
//!
//! ```sh
//! cargo run --example wire_log -- http://127.0.0.1:2379
//! ```

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".to_owned());
    let client = locker::Client::builder()
        .endpoints([endpoint])
        .audit(|r: &locker::WireRecord| println!("{r}"))
        .connect()
        .await?;

    println!("# lock (its own lease)");
    let guard = client
        .lock("examples/wire-log")
        .ttl(Duration::from_secs(10))
        .await?;
    println!("# a write guarded by the lock");
    guard.put("examples/wire-log-data", "hello").await?;
    println!("# release");
    guard.release().await?;
    Ok(())
}
