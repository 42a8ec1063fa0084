//! The two choices about sources that the flags ([`crate::config`]), the admin API
//! ([`crate::admin`]) and the supervisor ([`crate::mode`]) share: which source runs, and
//! what a switch back to replay does. They live here, below all three, so that the
//! command line and the supervisor do not import each other.

use serde::{Deserialize, Serialize};

/// Which source is publishing.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Replay the parquet dataset.
    Replay,
    /// Poll Yahoo Finance.
    Live,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Replay, Mode::Live];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Replay => "replay",
            Mode::Live => "live",
        }
    }
}

/// What a switch back to replay does.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayOnSwitch {
    /// Continue after the last candle sent (or on the topic).
    Resume,
    /// Start the dataset over, stamped after the newest replay candle sent.
    Restart,
}
