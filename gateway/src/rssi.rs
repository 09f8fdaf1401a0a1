//! RSSI smoothing and distance. One reading of a BLE advertisement is noisy (σ ≈ 4–8 dB from
//! fading and bodies in the way), so presence decisions use a smoothed level: a 1-D Kalman
//! filter with a constant-level model (irregular sample spacing handled by growing the
//! variance with elapsed time), or an exponential moving average.

use omo_device_config::params::{PresenceParams, Smoothing};

/// Smoothing settings taken once from [`PresenceParams`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Smoother {
    Kalman {
        /// Process noise per second, dB².
        q_per_s: f64,
        /// Measurement noise, dB².
        r: f64,
    },
    Ema {
        alpha: f64,
    },
}

impl Smoother {
    pub fn from_params(p: &PresenceParams) -> Smoother {
        match p.smoothing {
            Smoothing::Kalman => Smoother::Kalman {
                q_per_s: p.kalman_process_noise,
                r: p.kalman_measurement_noise,
            },
            Smoothing::Ema => Smoother::Ema { alpha: p.ema_alpha },
        }
    }
}

/// The smoothed level of one transmitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RssiFilter {
    level: f64,
    /// Kalman estimate variance, dB² (unused by the EMA).
    variance: f64,
    last_ms: i64,
}

impl RssiFilter {
    /// Starts at the first reading.
    pub fn new(smoother: Smoother, rssi: f64, at_ms: i64) -> RssiFilter {
        let variance = match smoother {
            Smoother::Kalman { r, .. } => r,
            Smoother::Ema { .. } => 0.0,
        };
        RssiFilter {
            level: rssi,
            variance,
            last_ms: at_ms,
        }
    }

    /// Adds a reading taken at `at_ms` (not before the previous one) and returns the new level.
    pub fn update(&mut self, smoother: Smoother, rssi: f64, at_ms: i64) -> f64 {
        let dt_s = (at_ms - self.last_ms).max(0) as f64 / 1000.0;
        self.last_ms = self.last_ms.max(at_ms);
        match smoother {
            Smoother::Kalman { q_per_s, r } => {
                let predicted = self.variance + q_per_s * dt_s;
                let gain = predicted / (predicted + r);
                self.level += gain * (rssi - self.level);
                self.variance = (1.0 - gain) * predicted;
            }
            Smoother::Ema { alpha } => self.level += alpha * (rssi - self.level),
        }
        self.level
    }

    pub fn level(&self) -> f64 {
        self.level
    }
}

/// Distance from the log-distance path-loss model: `rssi = p1m - 10·n·log10(d)`, metres.
pub fn distance_m(rssi: f64, measured_power_1m: f64, exponent: f64) -> f64 {
    10f64.powf((measured_power_1m - rssi) / (10.0 * exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_inverts_the_model() {
        assert!((distance_m(-59.0, -59.0, 2.0) - 1.0).abs() < 1e-12);
        assert!((distance_m(-79.0, -59.0, 2.0) - 10.0).abs() < 1e-9);
    }

    #[test]
    fn kalman_settles_on_a_constant_and_ema_moves_by_alpha() {
        let k = Smoother::Kalman {
            q_per_s: 0.5,
            r: 36.0,
        };
        let mut f = RssiFilter::new(k, -60.0, 0);
        for i in 1..50 {
            f.update(k, if i % 2 == 0 { -66.0 } else { -74.0 }, i * 1000);
        }
        assert!((f.level() + 70.0).abs() < 2.0, "{}", f.level());
        let e = Smoother::Ema { alpha: 0.5 };
        let mut f = RssiFilter::new(e, -60.0, 0);
        assert_eq!(f.update(e, -70.0, 1), -65.0);
    }

    #[test]
    fn readings_out_of_order_do_not_break_the_filter() {
        let k = Smoother::Kalman {
            q_per_s: 0.5,
            r: 36.0,
        };
        let mut f = RssiFilter::new(k, -60.0, 5000);
        let v = f.update(k, -62.0, 1000);
        assert!(v.is_finite() && v < -60.0);
    }
}
