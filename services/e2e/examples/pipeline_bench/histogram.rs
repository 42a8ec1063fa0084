//! Prometheus histograms read from a `/metrics` text: the cumulative buckets, and the
//! quantiles PromQL's `histogram_quantile` would compute from them. The consumer's run
//! collects the buckets of its latency histogram; the latency run turns them into p50 and
//! p99, so a figure here matches a Grafana panel over the same metric.

/// A histogram's cumulative buckets `(le, count)` from a Prometheus text exposition, in `le`
/// order with `+Inf` last.
pub fn histogram_buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = rest.rsplit(' ').next()?.parse().ok()?;
            Some((le, count))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// PromQL's `histogram_quantile`: the bucket holding rank `q · total`, interpolated linearly
/// inside it (the first bucket from 0); a rank that falls in the `+Inf` bucket answers the
/// largest finite bound. NaN without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    if total == 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return lower;
            }
            if count == below {
                return le;
            }
            return lower + (le - lower) * (rank - below) / (count - below);
        }
        lower = le;
        below = count;
    }
    lower
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE x_seconds histogram\n\
        x_seconds_bucket{le=\"0.01\"} 10\n\
        x_seconds_bucket{le=\"+Inf\"} 40\n\
        x_seconds_bucket{le=\"0.005\"} 0\n\
        x_seconds_bucket{le=\"0.02\"} 30\n\
        x_seconds_sum 0.5\n\
        x_seconds_count 40\n";

    #[test]
    fn buckets_are_parsed_and_ordered() {
        assert_eq!(
            histogram_buckets(TEXT, "x_seconds"),
            vec![
                (0.005, 0.0),
                (0.01, 10.0),
                (0.02, 30.0),
                (f64::INFINITY, 40.0)
            ]
        );
    }

    #[test]
    fn quantiles_interpolate_like_promql() {
        let b = histogram_buckets(TEXT, "x_seconds");
        // Rank 20 of 40: 10 below 0.01, the bucket (0.01, 0.02] holds 20 → halfway.
        assert!((histogram_quantile(0.5, &b) - 0.015).abs() < 1e-12);
        // Rank 5: inside (0.005, 0.01], which holds ranks 0..10 → 0.005 + 0.005 · 5/10.
        assert!((histogram_quantile(0.125, &b) - 0.0075).abs() < 1e-12);
        // Rank 39.6 lies in +Inf: the largest finite bound.
        assert_eq!(histogram_quantile(0.99, &b), 0.02);
        assert!(histogram_quantile(0.5, &[]).is_nan());
        assert!(histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
    }
}
