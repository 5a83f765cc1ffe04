//! Median and spread over repetitions, and ratios of paired repetitions.

use serde::Serialize;

/// Median with the min–max spread over `n` repetitions.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub const NONE: Spread = Spread { median: f64::NAN, min: f64::NAN, max: f64::NAN, n: 0 };

    /// Over the finite values of `xs` (NaN and infinities are skipped).
    pub fn of(xs: &[f64]) -> Spread {
        let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::NONE;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1], n }
    }

    /// `f(a[i], b[i])` for each repetition `i` both have, then its spread.
    /// Used for ratios and differences of arms measured side by side.
    pub fn paired(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Spread {
        let v: Vec<f64> = a.iter().zip(b).map(|(x, y)| f(*x, *y)).collect();
        Spread::of(&v)
    }

    pub fn is_some(&self) -> bool {
        self.n > 0 && self.median.is_finite()
    }

    /// `1.07× (1.01–1.15)`-style text with `decimals` digits and a unit suffix.
    pub fn fmt(&self, decimals: usize, unit: &str) -> String {
        if !self.is_some() {
            return "n/a".into();
        }
        format!("{:.d$}{unit} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = decimals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]);
        assert_eq!(s.median, 2.5);
        assert!(!Spread::of(&[]).is_some());
    }

    #[test]
    fn paired_ratios() {
        let s = Spread::paired(&[2.0, 3.0, 4.0], &[1.0, 2.0, 2.0], |a, b| a / b);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.5, 2.0));
        assert_eq!(s.fmt(2, "×"), "2.00× (1.50–2.00)");
    }
}
