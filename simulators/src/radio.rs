//! How a simulated receiver hears a transmitter: the log-distance path-loss model with
//! Gaussian shadowing noise and packet loss. Gateways hearing phones, and phones hearing
//! store beacons, both go through it. Seeded: the same seed gives the same run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The radio environment between one kind of transmitter and receiver.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RadioModel {
    /// Path-loss exponent: 2 in free space, 2.5–4 indoors.
    pub exponent: f64,
    /// Standard deviation of the shadowing noise, dB.
    pub sigma_db: f64,
    /// Probability that one advertisement is lost, in [0, 1].
    pub loss: f64,
    /// Receiver sensitivity: weaker signals are not heard, dBm.
    pub floor_dbm: f64,
}

impl Default for RadioModel {
    fn default() -> RadioModel {
        RadioModel {
            exponent: 2.2,
            sigma_db: 6.0,
            loss: 0.2,
            floor_dbm: -100.0,
        }
    }
}

/// Mean RSSI at `distance_m` for a transmitter measuring `measured_power_dbm` at 1 m.
pub fn mean_rssi(measured_power_dbm: f64, exponent: f64, distance_m: f64) -> f64 {
    measured_power_dbm - 10.0 * exponent * distance_m.max(0.01).log10()
}

/// A seeded source of receptions.
#[derive(Debug, Clone)]
pub struct Radio {
    model: RadioModel,
    rng: StdRng,
}

impl Radio {
    pub fn new(model: RadioModel, seed: u64) -> Radio {
        Radio {
            model,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// One advertisement's RSSI as received, rounded to whole dBm like real radios report it,
    /// or `None` if the packet is lost or below the receiver's floor.
    pub fn receive(&mut self, measured_power_dbm: f64, distance_m: f64) -> Option<i16> {
        if self.rng.random::<f64>() < self.model.loss {
            return None;
        }
        let rssi = mean_rssi(measured_power_dbm, self.model.exponent, distance_m)
            + self.model.sigma_db * self.standard_normal();
        (rssi >= self.model.floor_dbm).then(|| rssi.round().clamp(-127.0, 20.0) as i16)
    }

    /// A standard normal sample (Box–Muller).
    fn standard_normal(&mut self) -> f64 {
        let u1: f64 = 1.0 - self.rng.random::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = self.rng.random();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_falls_with_distance() {
        assert_eq!(mean_rssi(-59.0, 2.0, 1.0), -59.0);
        assert!((mean_rssi(-59.0, 2.0, 10.0) - (-79.0)).abs() < 1e-9);
    }

    #[test]
    fn same_seed_same_run() {
        let run = |seed| {
            let mut r = Radio::new(RadioModel::default(), seed);
            (0..50).map(|_| r.receive(-59.0, 3.0)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn noise_and_loss_match_the_model() {
        let model = RadioModel {
            floor_dbm: -200.0,
            ..RadioModel::default()
        };
        let mut r = Radio::new(model, 42);
        let got: Vec<f64> = (0..20_000)
            .filter_map(|_| r.receive(-59.0, 3.0))
            .map(f64::from)
            .collect();
        let loss = 1.0 - got.len() as f64 / 20_000.0;
        let mean = got.iter().sum::<f64>() / got.len() as f64;
        let sd = (got.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / got.len() as f64).sqrt();
        assert!((loss - 0.2).abs() < 0.02, "loss {loss}");
        assert!(
            (mean - mean_rssi(-59.0, 2.2, 3.0)).abs() < 0.3,
            "mean {mean}"
        );
        assert!((sd - 6.0).abs() < 0.3, "sd {sd}");
    }
}
