//! Health checks and the leader: what the members say about themselves.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::builder::StartFailure;
use super::metrics::{http_request, json_field};
use super::{Etcd, ProcessState};
use crate::testing::HarnessError;

/// How long [`EtcdBuilder::start`](super::EtcdBuilder::start), [`Etcd::restart`] and
/// [`Etcd::wait_healthy`] wait for members to become healthy.
pub(super) const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`Etcd::leader`] waits for the members to agree on a leader.
const LEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Interval between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Deadline of one HTTP request to a member (health, status).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Lines of member log quoted in startup / health errors.
const ERROR_LOG_LINES: usize = 40;

impl Etcd {
    /// Index of the current leader, once the members agree on one (waits up
    /// to 10 s).
    ///
    /// Every running member is asked (`POST /v3/maintenance/status`); members
    /// that do not answer within 1 s (e.g. paused) are ignored. The members
    /// that answer must all name the same leader, and that leader must be one
    /// of them. With client TLS the `etcd_server_is_leader` and
    /// `etcd_server_has_leader` gauges from the metrics listener are used
    /// instead: exactly one answering member is leader and all have one.
    ///
    /// # Errors
    ///
    /// If no agreed leader is found within 10 s; the message lists what each
    /// member answered last.
    pub async fn leader(&self) -> Result<usize, HarnessError> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let last = match self.leader_once().await {
                Ok(i) => return Ok(i),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(HarnessError::new(format!(
                    "etcd members did not agree on a leader within {LEADER_TIMEOUT:?}: {last}"
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits (up to 20 s) until member `i` is healthy: `GET /health` on its
    /// client port returns `{"health":"true"}` (the member serves and has a
    /// leader). With client TLS: the client port accepts TCP connections and
    /// `/health` on the plain-HTTP metrics listener is true.
    ///
    /// # Errors
    ///
    /// If the member is not running or exits, or is not healthy within 20 s.
    /// The message includes the last health-check result and the tail of the
    /// member's log.
    ///
    /// # Panics
    ///
    /// If `i >= self.len()`.
    pub async fn wait_healthy(&self, i: usize) -> Result<(), HarnessError> {
        self.member(i);
        self.wait_members_healthy(&[i], Instant::now() + HEALTH_TIMEOUT)
            .await
            .map_err(|failure| failure.error)
    }

    /// Address serving plain-HTTP `/metrics` and `/health`.
    pub(super) fn metrics_addr(&self, i: usize) -> SocketAddr {
        let member = self.member(i);
        let port = member.metrics_port.unwrap_or(member.client_port);
        SocketAddr::from((Ipv4Addr::LOCALHOST, port))
    }

    /// One health probe of member `i`: `Ok` if healthy, else why not.
    async fn check_health(&self, i: usize) -> Result<(), String> {
        if self.tls {
            let addr = self.client_addr(i);
            match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("client port {addr}: {e}")),
                Err(_) => return Err(format!("client port {addr}: connect timed out")),
            }
        }
        let (status, body) = http_request(
            self.metrics_addr(i),
            "GET",
            "/health",
            None,
            REQUEST_TIMEOUT,
        )
        .await?;
        if status == 200 && body.contains("\"health\":\"true\"") {
            Ok(())
        } else {
            Err(format!("GET /health: HTTP {status} {}", body.trim()))
        }
    }

    /// Waits until every member in `which` is healthy, failing fast if one exits.
    pub(super) async fn wait_members_healthy(
        &self,
        which: &[usize],
        deadline: Instant,
    ) -> Result<(), StartFailure> {
        let mut pending: Vec<usize> = which.to_vec();
        let mut last_problem = String::from("no health check completed yet");
        loop {
            // Fail fast if any member died (e.g. its port was taken).
            for &i in which {
                let member = self.member(i);
                match self.process_state(i) {
                    ProcessState::Running => {}
                    ProcessState::Exited(status) => {
                        let tail = self.log_tail(i, ERROR_LOG_LINES);
                        return Err(StartFailure {
                            port_conflict: tail.contains("address already in use"),
                            error: HarnessError::new(format!(
                                "etcd member {} exited ({status}) before becoming healthy; \
                                 log tail ({}):\n{tail}",
                                member.name,
                                member.log_path.display()
                            )),
                        });
                    }
                    ProcessState::NotRunning => {
                        return Err(HarnessError::new(format!(
                            "etcd member {} is not running (killed?); log tail ({}):\n{}",
                            member.name,
                            member.log_path.display(),
                            self.log_tail(i, ERROR_LOG_LINES)
                        ))
                        .into());
                    }
                }
            }
            let mut still_pending = Vec::new();
            for &i in &pending {
                if let Err(why) = self.check_health(i).await {
                    if still_pending.is_empty() {
                        last_problem = why;
                    }
                    still_pending.push(i);
                }
            }
            pending = still_pending;
            let Some(&first) = pending.first() else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                let member = self.member(first);
                return Err(HarnessError::new(format!(
                    "etcd member {} not healthy within {HEALTH_TIMEOUT:?} (last check: \
                     {last_problem}); log tail ({}):\n{}",
                    member.name,
                    member.log_path.display(),
                    self.log_tail(first, ERROR_LOG_LINES)
                ))
                .into());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// One leader probe: the agreed leader's index, or a description of what
    /// the members answered.
    async fn leader_once(&self) -> Result<usize, String> {
        let mut notes = Vec::new();
        // (member index, is that member the leader, leader as seen by it)
        let mut answers: Vec<(usize, bool, String)> = Vec::new();
        for i in 0..self.len() {
            let name = &self.member(i).name;
            if !self.is_running(i) {
                notes.push(format!("{name}: not running"));
                continue;
            }
            let answer = if self.tls {
                self.leader_view_from_metrics(i).await
            } else {
                self.leader_view_from_status(i).await
            };
            match answer {
                Ok((is_leader, leader)) => {
                    notes.push(format!("{name}: leader={leader}"));
                    answers.push((i, is_leader, leader));
                }
                Err(e) => notes.push(format!("{name}: {e}")),
            }
        }
        let summary = notes.join("; ");
        let Some((_, _, seen)) = answers.first() else {
            return Err(format!("no member answered ({summary})"));
        };
        if seen.is_empty() || seen == "0" || answers.iter().any(|(_, _, l)| l != seen) {
            return Err(format!("no agreement yet ({summary})"));
        }
        let leaders: Vec<usize> = answers
            .iter()
            .filter(|(_, is_leader, _)| *is_leader)
            .map(|(i, _, _)| *i)
            .collect();
        match leaders.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!("the leader did not answer ({summary})")),
            _ => Err(format!("several members claim leadership ({summary})")),
        }
    }

    /// `(is this member the leader, leader id as seen by it)` from
    /// `/v3/maintenance/status`.
    async fn leader_view_from_status(&self, i: usize) -> Result<(bool, String), String> {
        let (status, body) = http_request(
            self.client_addr(i),
            "POST",
            "/v3/maintenance/status",
            Some("{}"),
            REQUEST_TIMEOUT,
        )
        .await?;
        if status != 200 {
            return Err(format!("status: HTTP {status} {}", body.trim()));
        }
        let id = json_field(&body, "member_id")
            .ok_or_else(|| format!("status: no member_id in {}", body.trim()))?;
        let leader = json_field(&body, "leader").unwrap_or_else(|| "0".to_owned());
        Ok((id == leader && leader != "0", leader))
    }

    /// `(is this member the leader, "yes"/"0")` from the leader gauges; used
    /// with client TLS, where the gauges are the only plain-HTTP view.
    async fn leader_view_from_metrics(&self, i: usize) -> Result<(bool, String), String> {
        let is_leader = self
            .metric(i, "etcd_server_is_leader")
            .await
            .map_err(|e| e.to_string())?;
        let has_leader = self
            .metric(i, "etcd_server_has_leader")
            .await
            .map_err(|e| e.to_string())?;
        let seen = if has_leader > 0.0 { "yes" } else { "0" };
        Ok((is_leader > 0.0, seen.to_owned()))
    }
}
