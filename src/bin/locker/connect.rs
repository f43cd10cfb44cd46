//! From the global options to a connected [`Client`]: endpoints, TLS files,
//! user and password, the wire log.

use std::io::Write as _;

use locker::{Client, WireRecord};

use crate::args::Cli;

/// The endpoints: `--endpoints`/`LOCKER_ENDPOINTS`, else `ETCDCTL_ENDPOINTS`,
/// else the local default.
fn endpoints(cli: &Cli) -> Result<Vec<String>, String> {
    let raw = match &cli.endpoints {
        Some(e) => e.clone(),
        None => match std::env::var("ETCDCTL_ENDPOINTS") {
            Ok(e) if !e.trim().is_empty() => e,
            _ => "http://127.0.0.1:2379".to_owned(),
        },
    };
    let list: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err("no etcd endpoint given: use --endpoints http://HOST:PORT[,...]".to_owned());
    }
    Ok(list)
}

pub(crate) fn client_builder(cli: &Cli) -> Result<locker::ClientBuilder, String> {
    let mut b = Client::builder().endpoints(endpoints(cli)?);
    if let Some(ca) = &cli.cacert {
        b = b.ca_cert_file(ca);
    }
    match (&cli.cert, &cli.key) {
        (Some(cert), Some(key)) => b = b.client_cert_files(cert, key),
        (None, None) => {}
        _ => return Err("--cert and --key go together (mutual TLS needs both)".to_owned()),
    }
    if let Some(t) = cli.connect_timeout {
        b = b.connect_timeout(t);
    }
    if let Some(t) = cli.request_timeout {
        b = b.request_timeout(t);
    }
    if let Some(user) = &cli.user {
        let (name, password) = match user.split_once(':') {
            Some((n, p)) => (n.to_owned(), p.to_owned()),
            None => match std::env::var("LOCKER_PASSWORD") {
                Ok(p) => (user.clone(), p),
                Err(_) => {
                    return Err(format!(
                        "no password for user {user:?}: use --user NAME:PASSWORD or set LOCKER_PASSWORD"
                    ));
                }
            },
        };
        if name.is_empty() {
            return Err("the user name in --user must not be empty".to_owned());
        }
        b = b.user(name, password);
    }
    if cli.wire_log {
        b = b.audit(|r: &WireRecord| {
            // One write per line, so lines stay whole next to the command's output.
            let line = format!("{r}\n");
            let _ = std::io::stderr().write_all(line.as_bytes());
        });
    }
    Ok(b)
}
