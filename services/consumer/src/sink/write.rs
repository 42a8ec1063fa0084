//! The write path: a batch's request bodies sent `concurrency` at a time, each retried until
//! InfluxDB answers about its lines; a refused request is bisected down to the lines InfluxDB
//! refuses, which come back as [`RejectedPoint`]s for the dead-letter topic.

use super::client::InfluxSink;
use super::encode::{EncodedBatch, RejectedPoint, RequestBody};
use super::error::{error_chain, error_message, transport_kind, SinkError};
use super::retry::{classify, Answer, Backoff, Settled};
use crate::events::{
    LinesRejected, PointRejected, PointsWritten, WriteAccepted, WriteBisecting, WriteRetrying,
};
use crate::lineproto::EncodedPoints;
use crate::metrics::WriteErrorKind;
use crate::point::Point;
use candlepipe_model::shutdown::Shutdown;
use futures::stream::{self, StreamExt, TryStreamExt};
use std::ops::Range;
use std::time::Instant;

/// What happened to the points of one [`InfluxSink::write`] call. Every input point is in
/// exactly one of: written, rejected, empty.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteOutcome {
    /// Points InfluxDB accepted.
    pub written: usize,
    /// Points InfluxDB refused (or that could not be encoded), for the dead-letter topic.
    pub rejected: Vec<RejectedPoint>,
    /// Points with no field to write (nothing to send, nothing lost).
    pub empty: usize,
}

impl InfluxSink {
    /// Writes `points`, `batch_points` per request. Returns once InfluxDB accepted every
    /// point except those in [`WriteOutcome::rejected`]; retries transient failures until
    /// then, or until `stop` fires ([`SinkError::Stopped`]: some points may have been
    /// written, which a later re-write makes whole, since points are idempotent upserts).
    pub async fn write(
        &self,
        points: &[Point],
        stop: &Shutdown,
    ) -> Result<WriteOutcome, SinkError> {
        self.write_encoded(&self.encode(points), stop).await
    }

    /// [`InfluxSink::write`] of a batch encoded earlier: the batch loop encodes a batch as
    /// soon as it is aggregated and drops the points.
    pub async fn write_encoded(
        &self,
        batch: &EncodedBatch,
        stop: &Shutdown,
    ) -> Result<WriteOutcome, SinkError> {
        let mut outcome = WriteOutcome {
            written: 0,
            rejected: batch.unencodable.clone(),
            empty: batch.empty,
        };
        // Up to `concurrency` requests in flight: InfluxDB ingests on several cores, and one
        // request at a time leaves it idle while the next body is built and sent.
        let parts: Vec<WriteOutcome> = stream::iter(0..batch.requests.len())
            .map(|i| {
                let mut stop = stop.clone();
                let request = &batch.requests[i];
                async move {
                    let mut part = WriteOutcome::default();
                    self.write_request(batch, request, &mut stop, &mut part)
                        .await
                        .map(|()| part)
                }
            })
            .buffer_unordered(self.inner.cfg.concurrency.max(1))
            .try_collect()
            .await?;
        for part in parts {
            outcome.written += part.written;
            outcome.rejected.extend(part.rejected);
        }
        outcome.rejected.sort_by_key(|r| r.index);
        Ok(outcome)
    }

    /// Sends one prepared request; if InfluxDB rejects lines of it, unpacks its text and
    /// isolates them.
    async fn write_request(
        &self,
        batch: &EncodedBatch,
        request: &RequestBody,
        stop: &mut Shutdown,
        outcome: &mut WriteOutcome,
    ) -> Result<(), SinkError> {
        let lines = &batch.lines[request.lines.clone()];
        match self.send_until_settled(&request.body, stop).await? {
            Settled::Accepted => {
                PointsWritten { lines }.emit(&self.inner.metrics);
                outcome.written += lines.len();
                Ok(())
            }
            Settled::Rejected(message) => {
                // The lines' spans index this request's own text.
                let encoded = EncodedPoints {
                    text: self.unpack(&request.body),
                    lines: lines.to_vec(),
                    ..EncodedPoints::default()
                };
                let all = 0..encoded.lines.len();
                self.write_bisecting(&encoded, all, Some(message), stop, outcome)
                    .await
            }
        }
    }

    /// Writes the lines `range` of `encoded`; when InfluxDB rejects some of them, halves the
    /// request until the rejected lines stand alone.
    /// `rejected` is InfluxDB's answer to the whole range, when it was already sent.
    async fn write_bisecting(
        &self,
        encoded: &EncodedPoints,
        range: Range<usize>,
        mut rejected: Option<String>,
        stop: &mut Shutdown,
        outcome: &mut WriteOutcome,
    ) -> Result<(), SinkError> {
        let mut pending = vec![range];
        let mut bisecting = false;
        while let Some(lines) = pending.pop() {
            let settled = match rejected.take() {
                Some(message) => Settled::Rejected(message),
                None => {
                    let body = self.request_body(encoded.body(lines.clone()));
                    self.send_until_settled(&body, stop).await?
                }
            };
            match settled {
                Settled::Accepted => {
                    PointsWritten {
                        lines: &encoded.lines[lines.clone()],
                    }
                    .emit(&self.inner.metrics);
                    outcome.written += lines.len();
                }
                Settled::Rejected(message) if lines.len() == 1 => {
                    let line = encoded.line_str(lines.start);
                    PointRejected {
                        line: &line,
                        error: &message,
                    }
                    .emit();
                    outcome.rejected.push(RejectedPoint {
                        index: encoded.lines[lines.start].point,
                        line,
                        error: message,
                    });
                }
                Settled::Rejected(message) => {
                    if !bisecting {
                        WriteBisecting {
                            points: lines.len(),
                            error: &message,
                        }
                        .emit();
                        bisecting = true;
                    }
                    let mid = lines.start + lines.len() / 2;
                    // Stack: the first half is written first.
                    pending.push(mid..lines.end);
                    pending.push(lines.start..mid);
                }
            }
        }
        Ok(())
    }

    /// Sends one request body until InfluxDB gives an answer about its lines. Transient
    /// failures are retried.
    async fn send_until_settled(
        &self,
        body: &[u8],
        stop: &mut Shutdown,
    ) -> Result<Settled, SinkError> {
        let mut backoff = Backoff::new(self.inner.cfg.max_backoff);
        loop {
            let started = Instant::now();
            let (kind, why) = match self.post(body).await {
                Answer::Accepted => {
                    WriteAccepted {
                        elapsed: started.elapsed(),
                    }
                    .emit(&self.inner.metrics);
                    return Ok(Settled::Accepted);
                }
                Answer::LinesRejected(message) => {
                    LinesRejected.emit(&self.inner.metrics);
                    return Ok(Settled::Rejected(message));
                }
                Answer::DatabaseMissing(why) => {
                    tracing::warn!(db = %self.inner.cfg.db, error = %why,
                        "InfluxDB database disappeared; creating it again");
                    if let Err(e) = self.create_database().await {
                        tracing::warn!(error = %e.message(), "could not create the database");
                    }
                    (WriteErrorKind::Client, why)
                }
                Answer::Retry(kind, why) => (kind, why),
            };
            WriteRetrying {
                kind,
                error: &why,
                attempt: backoff.attempts + 1,
            }
            .emit(&self.inner.metrics);
            backoff.pause(stop).await?;
        }
    }

    /// One write request, classified.
    async fn post(&self, body: &[u8]) -> Answer {
        let mut req = self
            .inner
            .client
            .post(self.inner.write_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_vec());
        if self.inner.cfg.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = match self.authorize(req).send().await {
            Ok(resp) => resp,
            Err(e) => return Answer::Retry(transport_kind(&e), error_chain(&e)),
        };
        let status = resp.status();
        if status.is_success() {
            return Answer::Accepted;
        }
        let message = error_message(resp).await;
        classify(status, message, self.inner.cfg.api)
    }
}
