//! The consumer's driver: runs a [`ConsumerSession`] on one QUIC stream. It sends the
//! session's request, reads frame bodies into it, and wakes it at its deadlines; every check is
//! the session's.

use std::future::Future;
use std::time::Instant;

use fedgate_catalog::{NodeId, Record};

use crate::exchange::{ConsumerEvent, ConsumerSession, Deadlines, ExchangeError, Query, TransferSummary};
use crate::link::{self, LinkError, PeerConnection};
use fedgate_audit::Entry;

/// A query in progress at the consumer: field names, then batches, then a checked end.
pub struct Transfer {
    session: ConsumerSession,
    recv: quinn::RecvStream,
}

/// Runs `fut` until `deadline`; `None` if the deadline came first.
async fn until<T>(deadline: Option<Instant>, fut: impl Future<Output = T>) -> Option<T> {
    match deadline {
        Some(at) => tokio::time::timeout_at(tokio::time::Instant::from_std(at), fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The time to tell a session woken by its deadline: never before that deadline, whatever the
/// timer's rounding, so the session always sees it as run out.
fn woken(deadline: Option<Instant>) -> Instant {
    let now = Instant::now();
    deadline.map_or(now, |d| d.max(now))
}

/// Whether `e` from [`Transfer::begin`] means the connection was already gone: it is closed
/// now, and what failed was not an answer from the peer or a refusal of our certificate.
fn died_before_answer(pc: &PeerConnection, e: &ExchangeError) -> bool {
    let answered = matches!(
        e,
        ExchangeError::Remote { .. }
            | ExchangeError::TimedOut { .. }
            | ExchangeError::Link(
                LinkError::Refused { .. } | LinkError::Remote { .. } | LinkError::Frame { .. }
            )
    );
    !answered && pc.conn.close_reason().is_some()
}

impl Transfer {
    /// Sends the query and waits for the header (or the refusal), without deadlines.
    pub async fn start(
        pc: &PeerConnection,
        local: &NodeId,
        dataset: &str,
        purpose: &str,
        filters: Vec<(String, String)>,
        limit: Option<u64>,
    ) -> Result<Transfer, ExchangeError> {
        let query = Query::asked(dataset, purpose, filters, limit).map_err(|why| {
            ExchangeError::Link(crate::link::LinkError::Protocol { peer: pc.peer.node().to_string(), why })
        })?;
        Transfer::begin(pc, local, query, Deadlines::default()).await
    }

    /// Sends `query` on a new stream of `pc` and waits for the header (or the refusal) within
    /// `deadlines`.
    pub async fn begin(
        pc: &PeerConnection,
        local: &NodeId,
        query: Query,
        deadlines: Deadlines,
    ) -> Result<Transfer, ExchangeError> {
        let mut session =
            ConsumerSession::new(pc.peer.clone(), local.clone(), query, deadlines, Instant::now())
                .with_audit_key(pc.audit_key.clone())
                .with_note_memo(pc.notes.clone());
        let who = pc.peer.node().to_string();
        let request = session.request();
        let open = async {
            let (mut send, mut recv) = pc.conn.open_bi().await.map_err(|e| link::lost(&who, e))?;
            link::send_encoded_request(&mut send, &mut recv, &request, &who).await?;
            Ok::<_, LinkError>(recv)
        };
        let deadline = session.poll_timeout();
        let recv = match until(deadline, open).await {
            Some(Ok(recv)) => recv,
            Some(Err(e)) => {
                session.handle_read_failed(e);
                return Err(failure(&mut session));
            }
            None => {
                session.handle_timeout(woken(deadline));
                return Err(failure(&mut session));
            }
        };
        let mut t = Transfer { session, recv };
        loop {
            match t.session.poll_event() {
                Some(ConsumerEvent::Header) => return Ok(t),
                Some(ConsumerEvent::Failed(e)) => return Err(e),
                Some(_) => continue,
                None => t.read_one().await,
            }
        }
    }

    /// [`Transfer::begin`] on `pc`; if that connection turns out dead before any answer
    /// arrived (the provider restarted: its stateless reset or close ended the cached
    /// connection), gets a fresh one from `redial` and asks once more, within the same
    /// deadlines. A query is a read, so asking twice is safe; a refusal or an answer is never
    /// retried.
    pub async fn begin_redialling<F, Fut>(
        pc: PeerConnection,
        local: &NodeId,
        query: Query,
        deadlines: Deadlines,
        redial: F,
    ) -> Result<Transfer, ExchangeError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<PeerConnection, ExchangeError>>,
    {
        match Transfer::begin(&pc, local, query.clone(), deadlines).await {
            Err(e) if died_before_answer(&pc, &e) => {
                tracing::info!(peer = %pc.peer.node(), error = %e, "cached connection was dead; dialling again");
                let answer_by = deadlines.answer_by.map(|(at, _)| at);
                let fresh = match until(answer_by, redial()).await {
                    Some(fresh) => fresh?,
                    None => return Err(e),
                };
                Transfer::begin(&fresh, local, query, deadlines).await
            }
            other => other,
        }
    }

    /// Reads one frame (or the end, a failure or a deadline) into the session.
    async fn read_one(&mut self) {
        let who = self.session.peer().node().to_string();
        let deadline = self.session.poll_timeout();
        match until(deadline, link::read_body(&mut self.recv, &who)).await {
            Some(Ok(Some(body))) => self.session.handle_frame(Instant::now(), &body),
            Some(Ok(None)) => self.session.handle_end(),
            Some(Err(e)) => self.session.handle_read_failed(e),
            None => self.session.handle_timeout(woken(deadline)),
        }
    }

    /// Gives up on the transfer, as incomplete, when no data arrives for `d` between frames.
    /// A slow but moving transfer is never cut; a silent provider is.
    pub fn stall_limit(self, d: std::time::Duration) -> Transfer {
        let Transfer { session, recv } = self;
        Transfer { session: session.with_stall_limit(d), recv }
    }

    /// The fields each record carries.
    pub fn fields(&self) -> &[String] {
        self.session.fields()
    }

    /// The provider's reason for allowing.
    pub fn reason(&self) -> &str {
        self.session.reason()
    }

    /// The provider.
    pub fn peer(&self) -> &NodeId {
        self.session.peer().node()
    }

    /// The dataset asked for.
    pub fn dataset(&self) -> &str {
        &self.session.query().dataset
    }

    /// The declared purpose.
    pub fn purpose(&self) -> &str {
        &self.session.query().purpose
    }

    /// The next batch; `Ok(None)` once the trailer has been received and verified.
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, ExchangeError> {
        self.session.handle_ready(Instant::now());
        loop {
            match self.session.poll_event() {
                Some(ConsumerEvent::Records(r)) => return Ok(Some(r)),
                Some(ConsumerEvent::Done(_)) => return Ok(None),
                Some(ConsumerEvent::Failed(e)) => return Err(e),
                Some(ConsumerEvent::Header) => continue,
                None if self.session.summary().is_some() => return Ok(None),
                None if self.session.is_over() => {
                    return Err(ExchangeError::Incomplete {
                        peer: self.peer().to_string(),
                        count: self.session.count(),
                        why: "the transfer already failed".into(),
                    })
                }
                None => self.read_one().await,
            }
        }
    }

    /// True once as many records arrived as the query's limit: the provider sends nothing
    /// but its trailer (or an error) after them.
    pub fn reached_limit(&self) -> bool {
        self.session.query().limit.is_some_and(|l| self.session.count() >= l)
    }

    /// The consumer's audit entry for this transfer, from `template` (this node and the digests
    /// in force): what was asked and what arrived.
    pub fn receipt(&self, template: Entry) -> Entry {
        self.session.receipt(template)
    }

    /// The verified summary, once `next_batch` has returned `Ok(None)`.
    pub fn summary(&self) -> Option<&TransferSummary> {
        self.session.summary()
    }
}

/// The failure the session just reported.
fn failure(session: &mut ConsumerSession) -> ExchangeError {
    while let Some(ev) = session.poll_event() {
        if let ConsumerEvent::Failed(e) = ev {
            return e;
        }
    }
    ExchangeError::Incomplete {
        peer: session.peer().node().to_string(),
        count: 0,
        why: "the transfer ended without an answer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_that_fires_early_still_wakes_the_session_at_its_deadline() {
        // Tokio's timer may wake a little before the instant asked for; the session must still
        // see its deadline as run out, or a timeout would read as a transfer without an answer.
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(woken(Some(deadline)), deadline);
        let past = Instant::now();
        assert!(woken(Some(past)) >= past);
        assert!(woken(None) >= past);
    }
}
