//! The criterion benches' numbers, read from criterion's own JSON output so that the report
//! can set them against the targets (`scripts/bench.sh` runs the benches first).

use std::path::Path;

/// The bench ids the report knows, with what one element is and the target, if any.
pub const BENCHES: [(&str, &str, Option<f64>); 5] = [
    (
        "consumer/decode",
        "a JSON message decoded and validated",
        None,
    ),
    (
        "consumer/aggregate",
        "a decoded candle applied to the state, its changed points taken",
        None,
    ),
    (
        "consumer/encode",
        "a candle's points (~2.3) written as line protocol",
        None,
    ),
    (
        "consumer/decode_aggregate_encode",
        "a message through decode → state → rollups/indicators → line protocol",
        Some(1.5e6),
    ),
    (
        "replay/read_merge_validate",
        "a parquet row read, merged by time and validated (bundled dataset)",
        Some(1e6),
    ),
];

/// One criterion bench's throughput.
#[derive(Debug, Clone)]
pub struct CriterionBench {
    pub id: String,
    /// Elements per second, from criterion's estimate of the time per iteration.
    pub rate: f64,
    /// Load average when the bench started (given by `scripts/bench.sh`).
    pub load: String,
}

/// Every bench of [`BENCHES`] that has results.
#[derive(Debug, Default)]
pub struct CriterionResults {
    pub benches: Vec<CriterionBench>,
}

impl CriterionResults {
    /// Reads `<dir>/<id>/new/{estimates,benchmark}.json`; `loads` are `id=load` pairs.
    pub fn read(dir: &Path, loads: &[String]) -> CriterionResults {
        let mut benches = Vec::new();
        for (id, _, _) in BENCHES {
            let base = dir.join(id);
            let json = |file: &str| -> Option<serde_json::Value> {
                serde_json::from_str(&std::fs::read_to_string(base.join(file)).ok()?).ok()
            };
            let (Some(estimates), Some(bench)) =
                (json("new/estimates.json"), json("new/benchmark.json"))
            else {
                continue;
            };
            if let Some(rate) = throughput(&estimates, &bench) {
                let load = loads
                    .iter()
                    .find_map(|l| l.strip_prefix(&format!("{id}=")))
                    .unwrap_or("?")
                    .to_owned();
                benches.push(CriterionBench {
                    id: id.to_owned(),
                    rate,
                    load,
                });
            }
        }
        CriterionResults { benches }
    }

    pub fn rate(&self, id: &str) -> Option<f64> {
        self.benches.iter().find(|b| b.id == id).map(|b| b.rate)
    }
}

/// Elements per second: the slope estimate (the middle number criterion prints) or, without
/// one, the median, over the elements per iteration.
fn throughput(estimates: &serde_json::Value, bench: &serde_json::Value) -> Option<f64> {
    let ns = estimates["slope"]["point_estimate"]
        .as_f64()
        .or_else(|| estimates["median"]["point_estimate"].as_f64())?;
    let elements = bench["throughput"]["Elements"].as_f64()?;
    Some(elements / (ns * 1e-9))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn throughput_is_elements_over_the_slope_or_the_median() {
        let bench = json!({"throughput": {"Elements": 100000}});
        let with_slope =
            json!({"slope": {"point_estimate": 1e8}, "median": {"point_estimate": 2e8}});
        assert_eq!(throughput(&with_slope, &bench), Some(1e6));
        let without = json!({"slope": null, "median": {"point_estimate": 2e8}});
        assert_eq!(throughput(&without, &bench), Some(5e5));
        assert_eq!(throughput(&without, &json!({"throughput": null})), None);
    }
}
