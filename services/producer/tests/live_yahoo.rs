//! Live mode end to end: the `producer` binary polls a fake Yahoo chart API (real candles
//! from `testdata/real-ohlcv`, served in Yahoo's JSON shape with nulls for gaps and a
//! partial in-progress minute, on a clock the test moves) and publishes to a real Kafka
//! broker. The topic is read back and compared with what the fake served: every closed
//! minute exactly once with Yahoo's values, in order, across many polls and a restart;
//! in-progress minutes flagged `closed=false`; rate limits, server errors, timeouts and
//! garbage survived with the errors visible on `/metrics`.

use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::now_ms;
use candlepipe_model::{codec, Candle, Source};
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::pipeline::{produce_candles, ServiceProcess};
use candlepipe_testkit::yahoo::{rebased, Fault, YahooFake};
use candlepipe_testkit::{read_topic, testdata, unique, wait_until, Kafka};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const M: i64 = MINUTE_MS;
/// The two live symbols: real fixtures served under their own names.
const SYMBOLS: [&str; 2] = ["XRP-ETH", "UNITTEST-BTC"];
const WAIT: Duration = Duration::from_secs(120);

/// A fake Yahoo serving 400 real minutes of each fixture, the first 300 minutes before the
/// present, its clock 60 minutes into them at a minute both symbols trade in.
fn market() -> YahooFake {
    let now = now_ms().div_euclid(M) * M;
    let first = now - 300 * M;
    let served: BTreeMap<&str, Vec<Candle>> = SYMBOLS
        .iter()
        .map(|s| {
            let all = read_candles(&testdata(&format!("real-ohlcv/{s}.parquet")));
            (*s, rebased(&all[..400], first))
        })
        .collect();
    // A minute where both symbols have a candle that moves, so its partial values change
    // as the minute goes on.
    let lively = |c: &Candle| c.volume > 0.0 && (c.open != c.close || c.high != c.low);
    let minute = (first + 60 * M..)
        .step_by(M as usize)
        .find(|t| {
            served
                .values()
                .all(|cs| cs.iter().any(|c| c.open_time == *t && lively(c)))
        })
        .expect("a minute where both fixtures trade");
    let fake = YahooFake::start(minute + 10_000);
    for (s, cs) in &served {
        fake.serve(s, cs);
    }
    fake
}

fn start_producer(fake: &YahooFake, topic: &str, extra: &[&str]) -> ServiceProcess {
    let mut args: Vec<String> = [
        "--mode",
        "live",
        "--brokers",
        &Kafka::shared().brokers,
        "--topic",
        topic,
        "--yahoo-base-url",
        fake.base_url(),
        "--poll-interval",
        "200ms",
        "--symbols",
        &SYMBOLS.join(","),
        "--live-backfill",
        "6h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    ServiceProcess::start(std::path::Path::new(env!("CARGO_BIN_EXE_producer")), &args)
}

/// Every live message on the topic, decoded, per symbol in partition order (= publish
/// order).
fn published(topic: &str) -> BTreeMap<String, Vec<Candle>> {
    let mut out: BTreeMap<String, Vec<Candle>> = BTreeMap::new();
    for r in read_topic(&Kafka::shared().brokers, topic) {
        let c = codec::decode(r.payload.as_deref().expect("payload")).expect("a valid candle");
        assert_eq!(r.key_str(), c.symbol, "keyed by symbol");
        if c.source == Source::Live {
            out.entry(c.symbol.clone()).or_default().push(c);
        }
    }
    out
}

/// True when the topic shows, for each of `symbols`, every closed minute the fake shows
/// and (if a minute is in progress) its current partial values as the latest `closed=false`
/// message of that minute.
fn caught_up(fake: &YahooFake, got: &BTreeMap<String, Vec<Candle>>, symbols: &[&str]) -> bool {
    symbols.iter().all(|s| {
        let msgs = got.get(*s).map(Vec::as_slice).unwrap_or_default();
        let closed: BTreeSet<i64> = msgs
            .iter()
            .filter(|c| c.closed)
            .map(|c| c.open_time)
            .collect();
        let all_closed = fake
            .closed_candles(s)
            .iter()
            .all(|c| closed.contains(&c.open_time));
        let live_ok = match fake.in_progress(s) {
            None => true,
            Some(want) => msgs
                .iter()
                .rev()
                .find(|c| !c.closed && c.open_time == want.open_time)
                .is_some_and(|c| same_values(c, &want)),
        };
        all_closed && live_ok
    })
}

fn wait_caught_up(
    fake: &YahooFake,
    topic: &str,
    symbols: &[&str],
    what: &str,
) -> BTreeMap<String, Vec<Candle>> {
    let mut got = BTreeMap::new();
    wait_until(WAIT, what, || {
        got = published(topic);
        caught_up(fake, &got, symbols)
    });
    got
}

fn same_values(a: &Candle, b: &Candle) -> bool {
    (a.open_time, a.open, a.high, a.low, a.close, a.volume)
        == (b.open_time, b.open, b.high, b.low, b.close, b.volume)
}

/// Every closed candle the fake shows is on the topic exactly once, with Yahoo's values and
/// nothing Yahoo does not give, in ascending order; no message goes back in time.
fn assert_exactly_once_with_yahoos_values(fake: &YahooFake, got: &BTreeMap<String, Vec<Candle>>) {
    for s in SYMBOLS {
        let msgs = &got[s];
        let closed: Vec<&Candle> = msgs.iter().filter(|c| c.closed).collect();
        let want = fake.closed_candles(s);
        assert_eq!(
            closed.iter().map(|c| c.open_time).collect::<Vec<_>>(),
            want.iter().map(|c| c.open_time).collect::<Vec<_>>(),
            "{s}: every closed minute exactly once, in order (gaps stay gaps)"
        );
        for (c, w) in closed.iter().zip(&want) {
            assert!(
                same_values(c, w),
                "{s}: Yahoo's values: got {c:?}, served {w:?}"
            );
            assert_eq!(
                (
                    c.quote_volume,
                    c.trades,
                    c.taker_buy_base,
                    c.taker_buy_quote
                ),
                (None, None, None, None),
                "{s}: fields Yahoo does not give are absent"
            );
            assert!(c.produced_at.is_some());
        }
        assert!(
            msgs.windows(2).all(|w| w[0].open_time <= w[1].open_time),
            "{s}: messages never go back in time"
        );
    }
}

/// The value of one labelled series on `/metrics`.
fn labelled(p: &ServiceProcess, name: &str, label: &str) -> f64 {
    let prefix = format!("{name}{{{label}}} ");
    p.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

const ERRORS: &str = "candlepipe_producer_live_fetch_errors_total";

#[test]
fn closed_minutes_exactly_once_across_polls_and_a_restart_with_live_minutes_flagged() {
    let fake = market();
    let topic = unique("live-yahoo");
    let mut producer = start_producer(&fake, &topic, &[]);

    let backfill = wait_caught_up(&fake, &topic, &SYMBOLS, "the backfill");
    for s in SYMBOLS {
        assert!(
            backfill[s].iter().filter(|c| c.closed).count() >= 20,
            "{s}: an hour of history was backfilled"
        );
    }
    let live_minute = fake
        .in_progress(SYMBOLS[0])
        .expect("a minute in progress")
        .open_time;

    // The minute in progress moves on three times, then whole minutes pass: one, then
    // several at once (a poll sees many closed minutes).
    for step in [15_000, 15_000, 15_000, M, 3 * M, 7 * M] {
        fake.advance(step);
        wait_caught_up(
            &fake,
            &topic,
            &SYMBOLS,
            &format!("the producer to follow {step} ms"),
        );
    }

    // Restart right after a burst: the newest closed candles went out together, in one
    // Kafka batch, and must all count as published.
    producer.signal(libc::SIGTERM);
    assert_eq!(producer.wait_exit(WAIT), Some(0), "a clean exit on SIGTERM");
    let mut producer = start_producer(&fake, &topic, &[]);
    fake.advance(3 * M);
    wait_caught_up(&fake, &topic, &SYMBOLS, "the restarted producer to go on");

    // Restart after ten minutes down, with other traffic after the last live candle:
    // 12,000 replay candles with the same key (so the same partition), all newer than
    // anything live. The restarted producer must look past them (several chunks back)
    // and must not take them for live ones.
    producer.signal(libc::SIGTERM);
    assert_eq!(producer.wait_exit(WAIT), Some(0), "a clean exit on SIGTERM");
    fake.advance(10 * M + 20_000);
    let far = now_ms().div_euclid(M) * M + 30 * 24 * 60 * M;
    let noise: Vec<Candle> = (0..12_000)
        .map(|i| {
            Candle::ohlcv(
                SYMBOLS[0],
                Source::Replay,
                far + i * M,
                1.0,
                1.0,
                1.0,
                1.0,
                1.0,
            )
        })
        .collect();
    produce_candles(&Kafka::shared().brokers, &topic, &noise);
    let producer = start_producer(&fake, &topic, &[]);
    wait_caught_up(
        &fake,
        &topic,
        &SYMBOLS,
        "the producer to catch up after ten minutes down",
    );
    fake.advance(2 * M);
    let got = wait_caught_up(
        &fake,
        &topic,
        &SYMBOLS,
        "two more minutes after the restart",
    );
    assert_exactly_once_with_yahoos_values(&fake, &got);

    // The minute that was in progress at the start: published several times with
    // closed=false and changing partial values, then once closed with the final ones.
    for s in SYMBOLS {
        let of_minute: Vec<&Candle> = got[s]
            .iter()
            .filter(|c| c.open_time == live_minute)
            .collect();
        let partial: Vec<&&Candle> = of_minute.iter().filter(|c| !c.closed).collect();
        let last = of_minute.last().expect("the minute was published");
        assert!(
            last.closed,
            "{s}: the closed message comes after the in-progress ones"
        );
        assert!(
            partial.len() >= 3,
            "{s}: each change of the live minute was published ({} times)",
            partial.len()
        );
        assert!(
            partial.windows(2).all(|w| !same_values(w[0], w[1])),
            "{s}: an unchanged live minute is not published again"
        );
        assert!(
            partial.iter().all(|p| p.volume < last.volume),
            "{s}: partial volumes are below the final one"
        );
    }
    assert_eq!(labelled(&producer, ERRORS, "kind=\"malformed\""), 0.0);
}

#[test]
fn rate_limits_server_errors_timeouts_and_garbage_are_survived() {
    let fake = market();
    let topic = unique("live-faults");
    let producer = start_producer(&fake, &topic, &["--live-request-timeout", "1s"]);
    wait_caught_up(&fake, &topic, &SYMBOLS, "the backfill");

    let [xrp, btc] = SYMBOLS;
    fake.fail_next(xrp, 3, Fault::Status(429));
    fake.fail_next(xrp, 3, Fault::Status(500));
    fake.fail_next(btc, 2, Fault::Truncated);
    fake.fail_next(btc, 1, Fault::ShapeMismatch);
    fake.fail_next(btc, 1, Fault::Stall(Duration::from_secs(3)));
    fake.advance(5 * M);
    wait_until(WAIT, "every scripted fault to be served", || {
        fake.faults_left(xrp) + fake.faults_left(btc) == 0
    });
    wait_caught_up(&fake, &topic, &SYMBOLS, "recovery after the faults");
    for (kind, at_least) in [
        ("http_429", 3.0),
        ("http_5xx", 3.0),
        ("malformed", 3.0),
        ("timeout", 1.0),
    ] {
        let n = labelled(&producer, ERRORS, &format!("kind=\"{kind}\""));
        assert!(
            n >= at_least,
            "live_fetch_errors{{kind={kind}}} = {n}, expected >= {at_least}"
        );
    }
    assert!(
        producer.metric("candlepipe_producer_live_fetch_duration_seconds_count") > 0.0,
        "fetch latency is observed"
    );
    wait_until(
        WAIT,
        "the malformed answers to be logged with the symbol",
        || {
            producer
                .log()
                .lines()
                .any(|l| l.contains("malformed") && l.contains(btc))
        },
    );

    // One symbol failing for good does not hold up the other, and backs off alone.
    let mark = fake.requests().len();
    fake.fail_next(xrp, 100_000, Fault::Status(503));
    fake.advance(4 * M);
    let got = wait_caught_up(&fake, &topic, &[btc], "the healthy symbol to go on");
    let since_mark = |sym: &str| {
        fake.requests()[mark..]
            .iter()
            .filter(|r| r.symbol.as_deref() == Some(sym))
            .count()
    };
    wait_until(WAIT, "six failed attempts of the failing symbol", || {
        since_mark(xrp) >= 6
    });
    // Between its 1st and 6th failed attempt the failing symbol waited 5 backoffs
    // (0.1-0.2 s, 0.2-0.4 s, … doubling): at least 3.1 s, against 1 s at the poll pace.
    // The healthy symbol kept polling every 200 ms meanwhile, so it asked at least twice
    // as often; without backoff both would ask about equally often.
    let log = &fake.requests()[mark..];
    let xrp_at: Vec<usize> = (0..log.len())
        .filter(|i| log[*i].symbol.as_deref() == Some(xrp))
        .take(6)
        .collect();
    let btc_between = log[xrp_at[0]..xrp_at[5]]
        .iter()
        .filter(|r| r.symbol.as_deref() == Some(btc))
        .count();
    assert!(
        btc_between >= 2 * 5,
        "the failing symbol backs off: {btc_between} requests for {btc} during 5 of {xrp}'s waits"
    );
    assert!(
        fake.faults_left(xrp) > 0,
        "the failing symbol failed throughout"
    );
    let newest_xrp = got[xrp]
        .iter()
        .filter(|c| c.closed)
        .map(|c| c.open_time)
        .max();
    let xrp_now = fake.closed_candles(xrp).last().map(|c| c.open_time);
    assert!(
        newest_xrp < xrp_now,
        "nothing new arrived for the failing symbol"
    );
    fake.clear_faults();
    let got = wait_caught_up(&fake, &topic, &SYMBOLS, "the failing symbol to catch up");
    assert_exactly_once_with_yahoos_values(&fake, &got);
}

/// Yahoo refusing crumbless requests (401 `Invalid Crumb`), as it does to many clients:
/// the producer fetches a cookie (`{base}/consent`) and a crumb (`{base}/v1/test/getcrumb`)
/// once for all symbols, sends them with every chart request, fetches a new pair when the
/// one in use goes stale, and publishes everything exactly once throughout.
#[test]
fn a_crumb_is_fetched_when_yahoo_wants_one_and_renewed_when_it_goes_stale() {
    let fake = market();
    fake.require_crumb(true);
    let topic = unique("live-crumb");
    let producer = start_producer(&fake, &topic, &[]);
    wait_caught_up(&fake, &topic, &SYMBOLS, "the backfill, with a crumb");
    assert_eq!(fake.requests_for("/consent").len(), 1, "one cookie for all");
    assert_eq!(fake.requests_for("/v1/test/getcrumb").len(), 1, "one crumb");
    let charts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.symbol.is_some())
        .collect();
    let with_crumb = charts
        .iter()
        .filter(|r| r.query.contains_key("crumb"))
        .count();
    assert!(
        with_crumb > 0 && charts[charts.len() - 1].cookie.is_some(),
        "chart requests carry the crumb and the cookie"
    );
    for r in &charts {
        assert_eq!(r.version, "HTTP/1.1", "plain http:// is HTTP/1.1: {r:?}");
        let ua = r.user_agent.as_deref().unwrap_or_default();
        assert!(ua.contains("Chrome/143.0.0.0"), "a current Chrome: {ua}");
    }

    fake.rotate_crumb();
    fake.advance(3 * M);
    let got = wait_caught_up(&fake, &topic, &SYMBOLS, "the producer to renew the crumb");
    assert_eq!(
        fake.requests_for("/consent").len(),
        2,
        "renewed once, for all"
    );
    assert_eq!(fake.requests_for("/v1/test/getcrumb").len(), 2);
    assert_exactly_once_with_yahoos_values(&fake, &got);
    assert!(
        labelled(&producer, ERRORS, "kind=\"http_4xx\"") >= 2.0,
        "the 401s were answers, and are counted"
    );
    assert_eq!(labelled(&producer, ERRORS, "kind=\"auth\""), 0.0);
}

/// A crumb endpoint that does not work is a fetch error of kind `auth` naming the URL and
/// the cause, and the producer keeps trying.
#[test]
fn a_crumb_that_cannot_be_had_is_an_auth_error_naming_the_cause() {
    let fake = market();
    fake.require_crumb(true);
    let topic = unique("live-no-crumb");
    let port = candlepipe_testkit::free_port(); // nothing listens there
    let cookie_url = format!("http://127.0.0.1:{port}/consent");
    let producer = start_producer(&fake, &topic, &["--yahoo-cookie-url", &cookie_url]);
    wait_until(WAIT, "auth errors to be counted", || {
        labelled(&producer, ERRORS, "kind=\"auth\"") >= 2.0
    });
    wait_until(WAIT, "the auth error to be logged with its cause", || {
        producer.log().lines().any(|l| {
            l.contains("kind=\"auth\"")
                && l.contains(&cookie_url)
                && l.contains("Connection refused")
        })
    });
}

#[test]
fn an_oversized_answer_is_dropped_unread_and_counted() {
    let fake = market();
    let topic = unique("live-oversized");
    let producer = start_producer(&fake, &topic, &["--live-max-response-bytes", "1MiB"]);
    wait_caught_up(&fake, &topic, &SYMBOLS, "the backfill");

    // 256 MiB of valid JSON (the real answer, then blanks), streamed without a length.
    let total: u64 = 256 << 20;
    let [_, btc] = SYMBOLS;
    fake.fail_next(btc, 1, Fault::Oversized(total));
    fake.advance(2 * M);
    wait_until(WAIT, "the oversized answer to be served", || {
        fake.faults_left(btc) == 0
    });
    wait_caught_up(
        &fake,
        &topic,
        &SYMBOLS,
        "recovery after the oversized answer",
    );
    let counted = labelled(&producer, ERRORS, "kind=\"too_large\"");
    assert!(
        counted >= 1.0,
        "live_fetch_errors{{kind=too_large}} = {counted}; errors: {:?}",
        producer
            .metrics_text()
            .lines()
            .filter(|l| l.starts_with(ERRORS))
            .collect::<Vec<_>>()
    );
    let sent = fake.oversized_bytes_sent();
    assert!(
        sent < total / 4,
        "the producer stopped reading at the limit: {sent} of {total} bytes were sent"
    );
    wait_until(WAIT, "the refusal to be logged with the symbol", || {
        producer
            .log()
            .lines()
            .any(|l| l.contains("1048576-byte limit") && l.contains(btc))
    });
}

/// `/readyz` with Yahoo failing: ready while any symbol answers; 503 naming the cause once
/// the last polls of every symbol failed; ready again at the next good answer. (Before, the
/// Kafka check alone decided, and the producer said ready while publishing nothing.)
#[test]
fn readyz_says_when_yahoo_stops_answering_every_symbol() {
    let fake = market();
    let topic = unique("live-readyz");
    let producer = start_producer(&fake, &topic, &[]);
    wait_caught_up(&fake, &topic, &SYMBOLS, "the backfill");
    let readyz = || {
        candlepipe_testkit::get(&format!("http://127.0.0.1:{}/readyz", producer.http_port))
            .unwrap_or((0, String::new()))
    };
    wait_until(WAIT, "/readyz 200 while Yahoo answers", || {
        readyz().0 == 200
    });

    let [xrp, btc] = SYMBOLS;
    fake.fail_next(xrp, 1_000_000, Fault::Status(500));
    wait_until(WAIT, "XRP-ETH's polls to fail", || {
        labelled(&producer, ERRORS, "kind=\"http_5xx\"") >= 5.0
    });
    let (code, body) = readyz();
    assert_eq!(code, 200, "one symbol still answers: {body}");

    fake.fail_next(btc, 1_000_000, Fault::Status(500));
    wait_until(WAIT, "/readyz 503 once every symbol fails", || {
        readyz().0 == 503
    });
    let (_, body) = readyz();
    assert!(body.contains("\"yahoo\""), "{body}");
    assert!(body.contains("every live symbol failed"), "{body}");
    assert!(body.contains("http_5xx"), "{body}");

    fake.clear_faults();
    wait_until(WAIT, "/readyz 200 once Yahoo answers again", || {
        readyz().0 == 200
    });
}
