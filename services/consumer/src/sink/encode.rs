//! Request building: a batch's points cut into request bodies of equal size, encoded as line
//! protocol one chunk at a time and gzipped when configured, each knowing which points its
//! lines came from (so a refused line can be traced back to its point).

use super::client::InfluxSink;
use crate::events::PointUnencodable;
use crate::lineproto::{EncodedLine, EncodedPoints};
use crate::point::Point;
use std::io::{Read, Write};
use std::ops::Range;

/// A batch's points as the request bodies [`InfluxSink::write_encoded`] sends, from
/// [`InfluxSink::encode`]. Points that cannot be encoded are rejected here, with their
/// debug form, so the caller can drop the points; with gzip on, the line protocol text is
/// dropped too and only the compressed bodies (about a sixth of it) wait for InfluxDB. A
/// rejected request is unpacked again to isolate its bad lines.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    /// Every encoded line (spans index the text of its request's body).
    pub(super) lines: Vec<EncodedLine>,
    /// One body per `batch_points` points, in order.
    pub(super) requests: Vec<RequestBody>,
    /// Points with no field to write.
    pub(super) empty: usize,
    pub(super) unencodable: Vec<RejectedPoint>,
}

/// A point that will never be accepted as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedPoint {
    /// Index of the point in the slice given to [`InfluxSink::write`].
    pub index: usize,
    /// Its line protocol (or, when it could not be encoded, its debug form).
    pub line: String,
    /// InfluxDB's error message, or why it could not be encoded.
    pub error: String,
}

#[derive(Debug)]
pub(super) struct RequestBody {
    /// Indices into [`EncodedBatch::lines`].
    pub(super) lines: Range<usize>,
    /// The request body: the lines' text, gzipped when configured.
    pub(super) body: Vec<u8>,
}

impl EncodedBatch {
    /// Lines to write.
    pub fn lines(&self) -> usize {
        self.lines.len()
    }
}

impl InfluxSink {
    /// Encodes `points` into request bodies of at most `batch_points` lines each (see
    /// [`EncodedBatch`]). One chunk of points is encoded at a time into a reused buffer, so
    /// the whole batch never exists as uncompressed text.
    ///
    /// A batch of more than `batch_points` points is cut into requests of equal size whose
    /// number is a multiple of `concurrency`, so the batch's last round of requests keeps
    /// InfluxDB as busy as the others: 22,850 points at 5,000 and 2 in flight are 6
    /// requests of 3,809 (3 full rounds), not 4 of 5,000 and a lone 2,850. (On its own this
    /// measured within noise on the benchmark: there the consumer then waited on fetches,
    /// see `fetch.wait.max.ms` in `batch::client`.)
    pub fn encode(&self, points: &[Point]) -> EncodedBatch {
        let cfg = &self.inner.cfg;
        let mut requests = points.len().div_ceil(cfg.batch_points.max(1));
        if requests > 1 {
            requests = requests.next_multiple_of(cfg.concurrency.max(1));
        }
        let per_request = points.len().div_ceil(requests.max(1)).max(1);
        let mut batch = EncodedBatch {
            lines: Vec::with_capacity(points.len()),
            ..EncodedBatch::default()
        };
        let mut chunk_text = EncodedPoints::default();
        for (n, chunk) in points.chunks(per_request).enumerate() {
            let offset = n * per_request;
            chunk_text.refill(chunk);
            batch.empty += chunk_text.empty;
            for (i, err) in &chunk_text.unencodable {
                PointUnencodable { error: err }.emit();
                batch.unencodable.push(RejectedPoint {
                    index: offset + i,
                    line: format!("{:?}", chunk[*i]),
                    error: err.to_string(),
                });
            }
            if chunk_text.lines.is_empty() {
                continue;
            }
            let first = batch.lines.len();
            batch
                .lines
                .extend(chunk_text.lines.iter().map(|l| EncodedLine {
                    point: offset + l.point,
                    ..l.clone()
                }));
            batch.requests.push(RequestBody {
                lines: first..batch.lines.len(),
                body: self.request_body(&chunk_text.text),
            });
        }
        batch
    }

    /// The lines' text of a body built by [`InfluxSink::request_body`].
    pub(super) fn unpack(&self, body: &[u8]) -> Vec<u8> {
        if !self.inner.cfg.gzip {
            return body.to_vec();
        }
        let mut text = Vec::with_capacity(body.len() * 6);
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut text)
            .expect("a body this sink gzipped itself decompresses");
        text
    }

    pub(super) fn request_body(&self, lines: &[u8]) -> Vec<u8> {
        if !self.inner.cfg.gzip {
            return lines.to_vec();
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(lines.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(lines)
            .and_then(|()| gz.finish())
            .expect("gzip into a Vec cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ConsumerMetrics;
    use crate::point::CandlePoint;
    use crate::sink::config::{InfluxApi, InfluxConfig};
    use candlepipe_model::{Interval, Source};
    use std::sync::Arc;

    fn sink(batch_points: usize, concurrency: usize, gzip: bool) -> InfluxSink {
        let cfg = InfluxConfig {
            api: InfluxApi::V1,
            batch_points,
            concurrency,
            gzip,
            ..InfluxConfig::default()
        };
        InfluxSink::new(cfg, ConsumerMetrics::new()).unwrap()
    }

    fn candle(symbol: &str, minute: i64) -> Point {
        Point::Candle(CandlePoint {
            symbol: Arc::from(symbol),
            source: Source::Replay,
            interval: Interval::M1,
            time: 1_614_556_800_000 + minute * 60_000,
            open: 1.0,
            high: 2.0,
            low: 0.5,
            close: 1.5,
            volume: 10.0,
            quote_volume: None,
            trades: None,
            taker_buy_base: None,
            taker_buy_quote: None,
            vwap: None,
        })
    }

    /// The module doc's example: 22,850 points at 5,000 per request and 2 in flight are 6
    /// requests of 3,809 (the last one 3,805), not 4 of 5,000 and a lone 2,850.
    #[test]
    fn requests_are_cut_equal_in_a_multiple_of_the_concurrency() {
        let points: Vec<Point> = (0..22_850).map(|m| candle("A", m)).collect();
        let batch = sink(5_000, 2, false).encode(&points);
        let sizes: Vec<usize> = batch.requests.iter().map(|r| r.lines.len()).collect();
        assert_eq!(sizes, [3_809, 3_809, 3_809, 3_809, 3_809, 3_805]);
        assert_eq!(batch.lines(), 22_850);
        // One request when the batch fits, whatever the concurrency.
        let one = sink(5_000, 4, false).encode(&points[..100]);
        assert_eq!(one.requests.len(), 1);
    }

    #[test]
    fn gzipped_bodies_unpack_to_the_lines_text() {
        let points: Vec<Point> = (0..50).map(|m| candle("A", m)).collect();
        let plain = sink(20, 1, false);
        let gzip = sink(20, 1, true);
        let (text, zipped) = (plain.encode(&points), gzip.encode(&points));
        assert_eq!(zipped.requests.len(), 3);
        for (p, z) in text.requests.iter().zip(&zipped.requests) {
            assert_ne!(p.body, z.body);
            assert_eq!(gzip.unpack(&z.body), p.body);
            assert_eq!(plain.unpack(&p.body), p.body);
            assert_eq!(p.lines, z.lines);
        }
    }

    #[test]
    fn unencodable_and_empty_points_are_accounted_with_their_index() {
        let mut points: Vec<Point> = (0..6).map(|m| candle("A", m)).collect();
        points[4] = candle("bad\nsymbol", 4);
        points[1] = Point::Indicator(crate::point::IndicatorPoint {
            symbol: Arc::from("A"),
            ..crate::point::IndicatorPoint::default()
        });
        let batch = sink(2, 1, false).encode(&points);
        assert_eq!(batch.empty, 1);
        assert_eq!(batch.unencodable.len(), 1);
        assert_eq!(batch.unencodable[0].index, 4);
        assert!(
            batch.unencodable[0].line.contains("bad"),
            "{:?}",
            batch.unencodable
        );
        // Lines keep the index of their point in the whole batch, across requests.
        let points_of: Vec<usize> = batch.lines.iter().map(|l| l.point).collect();
        assert_eq!(points_of, [0, 2, 3, 5]);
    }
}
