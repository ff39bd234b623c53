//! Percentiles and medians.

use std::time::Duration;

/// Latency summary in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Lat {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank percentile of a sorted slice.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(samples: &[Duration]) -> Lat {
    let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
    us.sort_by(f64::total_cmp);
    let mean = if us.is_empty() {
        f64::NAN
    } else {
        us.iter().sum::<f64>() / us.len() as f64
    };
    Lat {
        n: us.len(),
        p50: pct(&us, 50.0),
        p90: pct(&us, 90.0),
        p99: pct(&us, 99.0),
        max: us.last().copied().unwrap_or(f64::NAN),
        mean,
    }
}

impl Lat {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.n, "p50_us": r1(self.p50), "p90_us": r1(self.p90), "p99_us": r1(self.p99),
            "max_us": r1(self.max), "mean_us": r1(self.mean),
        })
    }
}

/// Median of the values (the middle one of an odd count; mean of the two middle ones).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// (min, max) of the finite values.
pub fn range(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        })
}

/// Round to one decimal for reports.
pub fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Round to three decimals for ratios.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
