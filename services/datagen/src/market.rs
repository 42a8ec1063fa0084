//! The market simulation: where every synthetic candle's numbers come from.
//!
//! The bundled dataset must *look* like Binance 1m klines to the pipeline and to a person
//! reading a chart, without shipping anyone's market data. Each pair is an independent
//! stream of [`Kline`]s built minute by minute from a few well-known stylised facts:
//!
//! * **Price**: a geometric random walk whose per-minute variance follows a GARCH(1,1)
//!   recursion, so calm and wild stretches cluster the way real returns do; shocks are
//!   partly shared through a market factor (crypto pairs move together) and occasionally
//!   jump (fat tails). Prices are rounded to the pair's tick size.
//! * **Candle shape**: open is the previous close; high and low reach beyond the body by a
//!   volatility-scaled random excursion, so `low <= open, close <= high` always holds.
//! * **Volume**: an intraday profile (quiet Asian night, busy US session, hourly spikes),
//!   lower weekends, more trading when the price moves, and log-normal noise. Quote volume
//!   is volume times a VWAP inside the candle's range; the taker-buy share leans towards
//!   buyers when the price rises and never exceeds the volume.
//! * **Gaps**: now and then a few minutes (rarely a few hours of "maintenance") are missing,
//!   as in real Binance history. The price keeps walking during a gap.
//!
//! Everything is driven by seeded ChaCha generators: the same seed, pair and window always
//! give bit-identical candles, on every machine. Each pair derives its own stream from the
//! seed and its symbol and replays the shared market-factor stream itself, so pairs can be
//! generated one at a time (no pair needs another in memory) and adding a pair never
//! changes the others.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Milliseconds per minute.
const MINUTE_MS: i64 = 60_000;
/// Minutes per (365-day) year: the unit of annualised volatility.
const MINUTES_PER_YEAR: f64 = 525_600.0;
/// GARCH(1,1) reaction to the last squared shock.
const GARCH_ALPHA: f64 = 0.06;
/// GARCH(1,1) persistence of the last variance (alpha + beta < 1 keeps it stationary).
const GARCH_BETA: f64 = 0.93;
/// Chance per minute of a market-wide jump (all pairs) and of a pair-only jump.
const JUMP_RATE: f64 = 0.0008;
/// Size of a jump, in standard deviations.
const JUMP_SIZE: f64 = 6.0;

/// One Binance 1m kline, with the types the Kaggle files store.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kline {
    /// Candle open time, Unix milliseconds, UTC, minute aligned.
    pub open_time_ms: i64,
    pub open: f32,
    pub high: f32,
    pub low: f32,
    pub close: f32,
    /// Base asset volume.
    pub volume: f32,
    /// Quote asset volume (≈ volume × VWAP).
    pub quote_asset_volume: f32,
    pub number_of_trades: u16,
    /// Part of `volume` bought by takers (≤ `volume`).
    pub taker_buy_base_asset_volume: f32,
    /// Part of `quote_asset_volume` bought by takers (≤ `quote_asset_volume`).
    pub taker_buy_quote_asset_volume: f32,
}

/// How one pair behaves: its price level, tick, volatility and liquidity.
#[derive(Debug, Clone, PartialEq)]
pub struct PairSpec {
    /// File stem and symbol, `BASE-QUOTE`.
    pub symbol: String,
    /// Price of the first candle's open.
    pub start_price: f64,
    /// Annualised volatility of log returns (0.8 = 80 %).
    pub annual_volatility: f64,
    /// Correlation of the pair's shocks with the shared market factor.
    pub market_correlation: f64,
    /// Price tick: every price is a multiple of it.
    pub tick: f64,
    /// Volume step: every base volume is a multiple of it.
    pub lot: f64,
    /// Typical quote volume traded per minute (USDT), before seasonality and noise.
    pub quote_volume_per_minute: f64,
    /// Typical size of one trade in quote currency (sets `number_of_trades`).
    pub avg_trade_quote: f64,
}

impl PairSpec {
    /// The five pairs of the bundled dataset, priced as on 2021-03-01 00:00 UTC.
    pub fn bundled() -> Vec<PairSpec> {
        let pair = |symbol: &str, price, vol, corr, tick, lot, qv, trade| PairSpec {
            symbol: symbol.to_owned(),
            start_price: price,
            annual_volatility: vol,
            market_correlation: corr,
            tick,
            lot,
            quote_volume_per_minute: qv,
            avg_trade_quote: trade,
        };
        vec![
            pair(
                "BTC-USDT", 45134.11, 0.80, 0.95, 0.01, 0.000001, 3.2e6, 2200.0,
            ),
            pair(
                "ETH-USDT", 1416.09, 0.95, 0.85, 0.01, 0.00001, 1.6e6, 1500.0,
            ),
            pair("BNB-USDT", 216.62, 1.10, 0.75, 0.0001, 0.001, 5.5e5, 900.0),
            pair("SOL-USDT", 15.47, 1.40, 0.65, 0.0001, 0.01, 1.2e5, 600.0),
            pair("XRP-USDT", 0.42070, 1.20, 0.70, 0.00001, 0.1, 4.5e5, 700.0),
        ]
    }

    /// The bundled pair named `symbol`, if there is one.
    pub fn bundled_named(symbol: &str) -> Option<PairSpec> {
        Self::bundled().into_iter().find(|p| p.symbol == symbol)
    }

    /// The `i`-th made-up pair `SYN0000-USDT`, `SYN0001-USDT`, … for scale tests and
    /// benchmarks that need hundreds of files. Its price level (0.01 to 10,000) and
    /// liquidity are derived from `i`, so the set is the same for every caller.
    pub fn synthetic(i: u32) -> PairSpec {
        let mut rng = ChaCha8Rng::seed_from_u64(0x5EED_0000 + u64::from(i));
        let decade = rng.random_range(-2.0..4.0f64);
        let price = 10f64.powf(decade);
        let tick = 10f64.powf((decade - 5.0).floor());
        PairSpec {
            symbol: format!("SYN{i:04}-USDT"),
            start_price: (price / tick).round() * tick,
            annual_volatility: rng.random_range(0.6..1.6),
            market_correlation: rng.random_range(0.4..0.9),
            tick,
            lot: 10f64.powf((1.0 - decade).floor().min(0.0)),
            quote_volume_per_minute: 10f64.powf(rng.random_range(3.5..6.0)),
            avg_trade_quote: rng.random_range(200.0..2000.0),
        }
    }
}

/// The window and randomness shared by every pair of one generated dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct MarketOptions {
    /// Seed of every random stream. Same seed, same candles.
    pub seed: u64,
    /// Open time of the first minute, Unix ms (rounded down to a minute).
    pub start_ms: i64,
    /// Number of minutes simulated (rows written = this minus the gaps).
    pub minutes: u32,
    /// Chance per minute that a gap (missing candles) starts. 0 disables gaps.
    pub gap_rate: f64,
}

impl Default for MarketOptions {
    /// 14 days from 2021-03-01 00:00 UTC, seed 20210301, a gap starting in 0.03 % of minutes.
    fn default() -> Self {
        MarketOptions {
            seed: 20_210_301,
            start_ms: 1_614_556_800_000,
            minutes: 14 * 24 * 60,
            gap_rate: 0.0003,
        }
    }
}

/// The candles of one pair, generated lazily minute by minute.
pub fn klines(spec: &PairSpec, opts: &MarketOptions) -> KlineStream {
    KlineStream::new(spec.clone(), opts.clone())
}

/// Iterator over one pair's candles (see [`klines`]). Holds only the simulation state.
#[derive(Debug, Clone)]
pub struct KlineStream {
    spec: PairSpec,
    opts: MarketOptions,
    /// Shared market factor: the same stream in every pair.
    market_rng: ChaCha8Rng,
    /// This pair's own shocks, derived from the seed and the symbol.
    pair_rng: ChaCha8Rng,
    /// Next minute index to simulate.
    minute: u32,
    /// Unrounded price after the last simulated minute.
    price: f64,
    /// Last close as written (tick-rounded): the next open.
    last_close: f64,
    /// Current GARCH conditional variance of the deseasonalised per-minute return.
    variance: f64,
    /// Long-run per-minute variance the GARCH recursion reverts to.
    long_run_variance: f64,
    /// Minutes of the current gap still to skip.
    gap_left: u32,
}

impl KlineStream {
    fn new(spec: PairSpec, opts: MarketOptions) -> Self {
        let mut market_rng = ChaCha8Rng::seed_from_u64(opts.seed);
        market_rng.set_stream(0);
        let mut pair_rng = ChaCha8Rng::seed_from_u64(opts.seed);
        pair_rng.set_stream(fnv1a(spec.symbol.as_bytes()) | 1);
        let long_run_variance = spec.annual_volatility.powi(2) / MINUTES_PER_YEAR;
        let start = round_to(spec.start_price, spec.tick);
        KlineStream {
            opts: MarketOptions {
                start_ms: opts.start_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
                ..opts
            },
            market_rng,
            pair_rng,
            minute: 0,
            price: start,
            last_close: start,
            variance: long_run_variance,
            long_run_variance,
            gap_left: 0,
            spec,
        }
    }

    /// Simulates one minute; `None` when it falls in a gap.
    fn step(&mut self) -> Option<Kline> {
        let open_time_ms = self.opts.start_ms + i64::from(self.minute) * MINUTE_MS;
        self.minute += 1;

        // Draw every random number of the minute up front, in a fixed order, so the
        // streams stay aligned whatever branch is taken below.
        let market_shock = normal(&mut self.market_rng);
        let market_jump = self.market_rng.random::<f64>() < JUMP_RATE;
        let market_jump_sign = if self.market_rng.random::<bool>() {
            1.0
        } else {
            -1.0
        };
        let r = &mut self.pair_rng;
        let own_shock = normal(r);
        let own_jump = r.random::<f64>() < JUMP_RATE;
        let (wick_up, wick_down) = (normal(r).abs(), normal(r).abs());
        let (volume_noise, vwap_noise, trade_noise, taker_noise) =
            (normal(r), normal(r), normal(r), normal(r));
        let (gap_draw, gap_kind, gap_len) =
            (r.random::<f64>(), r.random::<f64>(), r.random::<f64>());

        let season = intraday_activity(open_time_ms);
        let sigma = (self.variance * season).sqrt();
        let rho = self.spec.market_correlation;
        let mut z = rho * market_shock + (1.0 - rho * rho).sqrt() * own_shock;
        if market_jump {
            z += market_jump_sign * JUMP_SIZE * rho;
        }
        if own_jump {
            z += JUMP_SIZE * own_shock.signum();
        }
        let ret = sigma * z - 0.5 * sigma * sigma;
        let deseasonalised = ret / season.sqrt();
        self.variance = self.long_run_variance * (1.0 - GARCH_ALPHA - GARCH_BETA)
            + GARCH_ALPHA * deseasonalised * deseasonalised
            + GARCH_BETA * self.variance;

        let tick = self.spec.tick;
        let open = self.last_close;
        self.price *= ret.exp();
        let close = round_to(self.price, tick).max(tick);
        self.last_close = close;
        let high = round_to(open.max(close) * (0.45 * sigma * wick_up).exp(), tick);
        let low = round_to(open.min(close) * (-0.45 * sigma * wick_down).exp(), tick).max(tick);
        // Rounding can pull a wick inside the body: the body always wins.
        let high = high.max(open).max(close);
        let low = low.min(open).min(close);

        if self.gap_left > 0 {
            self.gap_left -= 1;
            return None;
        }
        if gap_draw < self.opts.gap_rate {
            // Mostly a few minutes; one gap in five is an hours-long "maintenance".
            self.gap_left = if gap_kind < 0.8 {
                (gap_len * 5.0) as u32
            } else {
                30 + (gap_len * 210.0) as u32
            };
            return None;
        }

        // Volume: session profile × weekend × "moves attract traders" × noise.
        let calm_ratio = (self.variance / self.long_run_variance).sqrt();
        let move_ratio = (ret.abs() / sigma.max(1e-12)).min(6.0);
        let activity = season
            * weekday_activity(open_time_ms)
            * calm_ratio.powf(0.7)
            * (0.75 + 0.25 * move_ratio)
            * (0.45 * volume_noise).exp();
        let mid = (high + low + close) / 3.0;
        let lot = self.spec.lot;
        let volume = round_to(self.spec.quote_volume_per_minute * activity / mid, lot).max(lot);
        let vwap = (mid + (high - low) * 0.15 * vwap_noise).clamp(low, high);
        let quote = volume * vwap;
        let trades = (quote / self.spec.avg_trade_quote * (0.25 * trade_noise).exp())
            .round()
            .clamp(1.0, f64::from(u16::MAX)) as u16;
        let taker_share =
            (0.5 + 0.3 * (ret / sigma.max(1e-12)).tanh() + 0.07 * taker_noise).clamp(0.02, 0.98);
        let taker_base = round_to(volume * taker_share, lot).min(volume);
        let taker_quote = (taker_base * vwap).min(quote);

        // f64 -> f32 rounding is monotonic, so the orderings above survive the cast;
        // the min() calls guard the two "part of a whole" fields against rounding up.
        let volume = volume as f32;
        let quote = quote as f32;
        Some(Kline {
            open_time_ms,
            open: open as f32,
            high: high as f32,
            low: low as f32,
            close: close as f32,
            volume,
            quote_asset_volume: quote,
            number_of_trades: trades,
            taker_buy_base_asset_volume: (taker_base as f32).min(volume),
            taker_buy_quote_asset_volume: (taker_quote as f32).min(quote),
        })
    }
}

impl Iterator for KlineStream {
    type Item = Kline;

    fn next(&mut self) -> Option<Kline> {
        while self.minute < self.opts.minutes {
            if let Some(k) = self.step() {
                return Some(k);
            }
        }
        None
    }
}

/// Relative trading activity by time of day (UTC): a quiet late US evening, a bump at the
/// Asian open, a higher one through the European morning and the busiest hours around the
/// US open; plus a small spike at each full hour (hourly candles close, bots rebalance).
/// Averages about 1 over a day.
pub fn intraday_activity(open_time_ms: i64) -> f64 {
    let minute_of_day = open_time_ms.rem_euclid(86_400_000) / MINUTE_MS;
    let hour = minute_of_day as f64 / 60.0;
    let bump = |centre: f64, width: f64| {
        let d = (hour - centre).abs();
        let d = d.min(24.0 - d);
        (-0.5 * (d / width).powi(2)).exp()
    };
    let hourly_spike = if minute_of_day % 60 == 0 { 0.25 } else { 0.0 };
    0.55 + 0.25 * bump(1.5, 2.0) + 0.2 * bump(8.5, 2.0) + 0.7 * bump(14.5, 2.5) + hourly_spike
}

/// Weekend trading is thinner: 0.7 on Saturdays and Sundays (UTC), 1 otherwise.
fn weekday_activity(open_time_ms: i64) -> f64 {
    // 1970-01-01 was a Thursday: day 0 -> 4 with Sunday = 0.
    let weekday = (open_time_ms.div_euclid(86_400_000) + 4).rem_euclid(7);
    if weekday == 0 || weekday == 6 {
        0.7
    } else {
        1.0
    }
}

/// A standard normal draw (Box–Muller; one of the pair is dropped to keep one draw = two
/// uniforms, always).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Rounds to the nearest multiple of `step`, computed so decimal ticks stay clean
/// (`0.01` steps give `45134.11`, not `45134.110000000004`).
fn round_to(v: f64, step: f64) -> f64 {
    let decimals = (-step.log10()).round();
    if decimals > 0.0 && (step * 10f64.powf(decimals) - 1.0).abs() < 1e-9 {
        let scale = 10f64.powf(decimals);
        (v * scale).round() / scale
    } else {
        (v / step).round() * step
    }
}

/// FNV-1a: a stable (toolchain-independent) hash of the symbol for its stream id.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(minutes: u32) -> MarketOptions {
        MarketOptions {
            minutes,
            ..MarketOptions::default()
        }
    }

    #[test]
    fn same_seed_same_candles_other_seed_other_candles() {
        let spec = PairSpec::bundled_named("ETH-USDT").unwrap();
        let a: Vec<_> = klines(&spec, &opts(500)).collect();
        let b: Vec<_> = klines(&spec, &opts(500)).collect();
        assert_eq!(a, b);
        let c: Vec<_> = klines(
            &spec,
            &MarketOptions {
                seed: 7,
                ..opts(500)
            },
        )
        .collect();
        assert_ne!(a, c);
    }

    #[test]
    fn candles_are_consistent_and_start_at_the_spec_price() {
        for spec in PairSpec::bundled() {
            let rows: Vec<_> = klines(&spec, &opts(20_000)).collect();
            assert_eq!(f64::from(rows[0].open), f64::from(spec.start_price as f32));
            let mut previous = i64::MIN;
            for k in &rows {
                assert!(k.open_time_ms > previous && k.open_time_ms % MINUTE_MS == 0);
                previous = k.open_time_ms;
                assert!(
                    k.low > 0.0 && k.low <= k.open.min(k.close),
                    "{spec:?} {k:?}"
                );
                assert!(k.high >= k.open.max(k.close), "{k:?}");
                assert!(
                    k.volume > 0.0 && k.taker_buy_base_asset_volume <= k.volume,
                    "{k:?}"
                );
                assert!(
                    k.taker_buy_quote_asset_volume <= k.quote_asset_volume,
                    "{k:?}"
                );
                let vwap = f64::from(k.quote_asset_volume) / f64::from(k.volume);
                let (lo, hi) = (f64::from(k.low), f64::from(k.high));
                assert!(
                    vwap >= lo * 0.999 && vwap <= hi * 1.001,
                    "vwap {vwap} {k:?}"
                );
                assert!(k.number_of_trades >= 1);
            }
        }
    }

    #[test]
    fn gaps_happen_and_none_when_disabled() {
        let spec = PairSpec::bundled_named("BTC-USDT").unwrap();
        let with_gaps = klines(&spec, &opts(20_160)).count();
        assert!(with_gaps < 20_160, "expected some missing minutes");
        assert!(
            with_gaps > 19_000,
            "gaps should be occasional, got {with_gaps}"
        );
        let none = MarketOptions {
            gap_rate: 0.0,
            ..opts(20_160)
        };
        assert_eq!(klines(&spec, &none).count(), 20_160);
    }

    #[test]
    fn volatility_clusters_and_pairs_co_move() {
        let spec = PairSpec::bundled_named("BTC-USDT").unwrap();
        let no_gaps = MarketOptions {
            gap_rate: 0.0,
            ..opts(20_160)
        };
        let log_returns = |s: &PairSpec| -> Vec<f64> {
            klines(s, &no_gaps)
                .map(|k| (f64::from(k.close) / f64::from(k.open)).ln())
                .collect()
        };
        let btc = log_returns(&spec);
        // Clustering: |r_t| and |r_{t-1}| are positively correlated (zero for i.i.d.).
        let abs: Vec<f64> = btc.iter().map(|r| r.abs()).collect();
        assert!(correlation(&abs[1..], &abs[..abs.len() - 1]) > 0.05);
        // Co-movement through the market factor.
        let eth = log_returns(&PairSpec::bundled_named("ETH-USDT").unwrap());
        assert!(correlation(&btc, &eth) > 0.5);
        // Realistic scale: annualised volatility within a factor of two of the spec.
        let sd = (btc.iter().map(|r| r * r).sum::<f64>() / btc.len() as f64).sqrt();
        let annual = sd * MINUTES_PER_YEAR.sqrt();
        assert!((0.4..1.6).contains(&annual), "annualised vol {annual}");
    }

    #[test]
    fn volume_follows_the_intraday_profile() {
        let spec = PairSpec::bundled_named("BTC-USDT").unwrap();
        let mut by_hour = [(0f64, 0u32); 24];
        for k in klines(&spec, &opts(20_160)) {
            let h = (k.open_time_ms.rem_euclid(86_400_000) / 3_600_000) as usize;
            by_hour[h].0 += f64::from(k.volume);
            by_hour[h].1 += 1;
        }
        let mean = |h: usize| by_hour[h].0 / f64::from(by_hour[h].1);
        assert!(
            mean(14) > 1.5 * mean(21),
            "US session busier than late evening"
        );
    }

    #[test]
    fn synthetic_pairs_are_stable_and_valid() {
        assert_eq!(PairSpec::synthetic(3), PairSpec::synthetic(3));
        assert_eq!(PairSpec::synthetic(12).symbol, "SYN0012-USDT");
        for i in 0..50 {
            let spec = PairSpec::synthetic(i);
            for k in klines(&spec, &opts(300)) {
                assert!(
                    k.low > 0.0 && k.low <= k.open.min(k.close) && k.high >= k.open.max(k.close)
                );
            }
        }
    }

    #[test]
    fn round_to_keeps_decimal_ticks_clean() {
        assert_eq!(round_to(45134.114999, 0.01), 45134.11);
        assert_eq!(round_to(0.420_704, 0.00001), 0.42070);
        assert_eq!(round_to(17.0, 5.0), 15.0);
    }

    fn correlation(a: &[f64], b: &[f64]) -> f64 {
        let n = a.len() as f64;
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
        let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
        let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
        cov / (va * vb).sqrt()
    }
}
