//! The configuration: what `iovirt run` runs, as TOML. The built-in default
//! is [`DEFAULT_CONFIG`]; a file of the same shape replaces it.

use iovirt_core::CostModel;
use serde::{Deserialize, Serialize};

use crate::iotlb_prefetch::Params;

/// The built-in configuration, as `iovirt config` prints it.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// A whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Seed of every random choice.
    pub seed: u64,
    /// Costs in virtual time.
    pub cost_model: CostModel,
    /// The `iotlb-prefetch` scenario.
    pub iotlb_prefetch: Params,
    /// The `demux` scenario.
    pub demux: crate::demux::Params,
    /// The `crossover` scenario.
    pub crossover: crate::crossover::Params,
    /// The `custom` scenario: a host and flows of the user's.
    pub custom: crate::custom::Params,
    /// The `rdma-odp` scenario.
    pub rdma_odp: crate::rdma_odp::Params,
}

/// A field's check: the field's name and what is wrong with it.
pub(crate) type Check = Result<(), (&'static str, String)>;

/// Frames per run: 1 to 1,000,000.
pub(crate) fn check_frames(frames: u32) -> Check {
    if frames == 0 || frames > 1_000_000 {
        return Err(("frames", format!("{frames} is not in 1..=1000000")));
    }
    Ok(())
}

/// 1 to 8 Ethernet frame lengths (60 to 1514 bytes).
pub(crate) fn check_frame_lens(lens: &[usize]) -> Check {
    if lens.is_empty() || lens.len() > 8 {
        return Err(("frame_lens", "give 1 to 8 lengths".to_owned()));
    }
    if let Some(bad) = lens.iter().find(|l| !(60..=1514).contains(*l)) {
        return Err((
            "frame_lens",
            format!("{bad} is not an Ethernet frame length (60..=1514)"),
        ));
    }
    Ok(())
}

/// An interrupt latency of at most 1 ms, and an ITR that fits 16 bits.
pub(crate) fn check_interrupts(irq_latency_ns: u64, itr: u32) -> Check {
    if irq_latency_ns > 1_000_000 {
        return Err((
            "irq_latency_ns",
            format!("{irq_latency_ns} ns is more than 1 ms"),
        ));
    }
    if itr > 0xffff {
        return Err(("itr", format!("{itr} does not fit ITR's 16 bits")));
    }
    Ok(())
}

/// A configuration that cannot be used, with the field to blame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not valid TOML, an unknown field, or a value of the wrong type
    /// (the parser's message names the field and the line).
    #[error("{0}")]
    Parse(String),
    /// A value out of range.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as `table.field`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Parses and checks a configuration.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        if config.cost_model.wire_bits_per_sec == 0 {
            return Err(ConfigError::Invalid {
                field: "cost_model.wire_bits_per_sec".to_owned(),
                reason: "a link of 0 bits per second carries nothing".to_owned(),
            });
        }
        Ok(config)
    }

    /// Checks every scenario's values, naming the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(table: &'static str) -> impl Fn((&str, String)) -> ConfigError {
            move |(field, reason)| ConfigError::Invalid {
                field: format!("{table}.{field}"),
                reason,
            }
        }
        self.iotlb_prefetch
            .validate()
            .map_err(invalid("iotlb_prefetch"))?;
        self.demux.validate().map_err(invalid("demux"))?;
        self.crossover.validate().map_err(invalid("crossover"))?;
        self.custom.validate().map_err(invalid("custom"))?;
        self.rdma_odp.validate().map_err(invalid("rdma_odp"))
    }

    /// The built-in configuration.
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::from_toml(DEFAULT_CONFIG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_file_is_the_default() {
        let parsed = Config::builtin().unwrap();
        assert_eq!(
            parsed,
            Config {
                seed: 1,
                ..Config::default()
            }
        );
        assert_eq!(parsed.iotlb_prefetch, Params::default());
        assert_eq!(parsed.cost_model, CostModel::default());
    }

    #[test]
    fn errors_name_the_field() {
        let e = Config::from_toml("[iotlb_prefetch]\nframs = 10\n").unwrap_err();
        assert!(e.to_string().contains("frams"), "{e}");
        let e = Config::from_toml("[iotlb_prefetch]\nframe_len = 9000\n").unwrap_err();
        assert_eq!(
            e,
            ConfigError::Invalid {
                field: "iotlb_prefetch.frame_len".to_owned(),
                reason: "9000 is not an Ethernet frame length (60..=1514)".to_owned()
            }
        );
        let e = Config::from_toml("seed = \"one\"\n").unwrap_err();
        assert!(e.to_string().contains("seed"), "{e}");
        let e = Config::from_toml("[cost_model]\nwire_bits_per_sec = 0\n").unwrap_err();
        assert!(e.to_string().starts_with("`cost_model.wire_bits_per_sec`"));
        // Partial files keep the defaults for what they leave out.
        let c = Config::from_toml("[iotlb_prefetch]\nframes = 10\n").unwrap();
        assert_eq!(
            (c.iotlb_prefetch.frames, c.iotlb_prefetch.frame_len),
            (10, 512)
        );
    }
}
