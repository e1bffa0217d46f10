//! Serde helpers for durations: human strings (`"250ms"`, `"2s"`) in configuration,
//! fractional milliseconds in snapshots and events.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Serializes as `"1s 500ms"`; reads `"250ms"`, `"2s"`, `"1m 30s"`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// Reads a human duration string.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

/// The same for `Option<Duration>`; `"off"` or `"none"` reads as `None`.
pub mod option {
    use super::*;

    /// Serializes `None` as `"off"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_str("off"),
        }
    }

    /// Reads a human duration string, or `"off"` / `"none"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if matches!(text.as_str(), "off" | "none") {
            return Ok(None);
        }
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

/// Serializes a duration as fractional milliseconds (for JSON snapshots and events).
pub fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e3)
}
