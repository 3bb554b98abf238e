//! Module settings: `rcache.default-ttl`, `rcache.default-grace`, `rcache.ttl-jitter`,
//! `rcache.max-path-len`, `rcache.max-tags`, `rcache.max-vary`, `rcache.purge-slice-us`, `rcache.cluster-timeout`. Values live in atomics so commands read them without locking;
//! Redis' CONFIG SET/GET reach them through callbacks registered in `lib.rs`.

use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use crate::core::args::Limits;

pub struct Setting {
    /// The name without the module prefix, as given to `loadmodule`.
    pub name: &'static str,
    pub min: i64,
    pub max: i64,
    pub default: i64,
    value: AtomicI64,
}

impl Setting {
    const fn new(name: &'static str, min: i64, max: i64, default: i64) -> Self {
        Setting { name, min, max, default, value: AtomicI64::new(default) }
    }

    pub fn get(&self) -> i64 {
        self.value.load(Relaxed)
    }

    pub fn set(&self, value: i64) -> Result<(), String> {
        if !(self.min..=self.max).contains(&value) {
            return Err(format!("rcache.{} must be between {} and {}", self.name, self.min, self.max));
        }
        self.value.store(value, Relaxed);
        Ok(())
    }
}

pub static DEFAULT_TTL: Setting = Setting::new("default-ttl", 0, 315_360_000, 0);
pub static DEFAULT_GRACE: Setting = Setting::new("default-grace", 0, 315_360_000, 0);
pub static TTL_JITTER: Setting = Setting::new("ttl-jitter", 0, 100, 0);
pub static MAX_PATH_LEN: Setting = Setting::new("max-path-len", 1, crate::core::path::MAX_PATH_LEN as i64, 4096);
pub static MAX_TAGS: Setting = Setting::new("max-tags", 1, 1024, 64);
pub static MAX_VARY: Setting = Setting::new("max-vary", 1, 256, 32);
/// How long the primary that takes a cluster-wide command waits for the others (ms).
pub static CLUSTER_TIMEOUT: Setting = Setting::new("cluster-timeout", 100, 600_000, 5000);

pub static PURGE_SLICE_US: Setting = Setting::new("purge-slice-us", 100, 1_000_000, 1000);

pub static SETTINGS: [&Setting; 8] =
    [&DEFAULT_TTL, &DEFAULT_GRACE, &TTL_JITTER, &MAX_PATH_LEN, &MAX_TAGS, &MAX_VARY, &PURGE_SLICE_US, &CLUSTER_TIMEOUT];

pub fn limits() -> Limits {
    let as_usize = |s: &Setting| usize::try_from(s.get()).unwrap_or(0);
    Limits { max_path_len: as_usize(&MAX_PATH_LEN), max_vary: as_usize(&MAX_VARY), max_tags: as_usize(&MAX_TAGS) }
}

/// Applies `loadmodule` arguments (`name value` pairs, names without the `rcache.`
/// prefix). Any unknown name, missing value, non-integer or out-of-range value is an
/// error naming it, and then nothing is applied.
pub fn apply_module_args(args: &[&[u8]]) -> Result<(), String> {
    let mut parsed = Vec::new();
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(pair[0]);
        let name = name.strip_prefix("rcache.").unwrap_or(&name);
        let setting = SETTINGS
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("unknown rcache setting '{name}'"))?;
        let raw = pair.get(1).ok_or_else(|| format!("rcache setting '{name}' needs a value"))?;
        let value = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("rcache.{name} must be an integer, got '{}'", String::from_utf8_lossy(raw)))?;
        if !(setting.min..=setting.max).contains(&value) {
            return Err(format!("rcache.{name} must be between {} and {}, got {value}", setting.min, setting.max));
        }
        parsed.push((setting, value));
    }
    for (setting, value) in parsed {
        setting.set(value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_args() {
        assert_eq!(apply_module_args(&[b"max-tags", b"10"]), Ok(()));
        assert_eq!(MAX_TAGS.get(), 10);
        assert_eq!(apply_module_args(&[b"bogus", b"1"]).unwrap_err(), "unknown rcache setting 'bogus'");
        assert_eq!(apply_module_args(&[b"max-vary"]).unwrap_err(), "rcache setting 'max-vary' needs a value");
        assert_eq!(apply_module_args(&[b"max-vary", b"x"]).unwrap_err(), "rcache.max-vary must be an integer, got 'x'");
        assert_eq!(apply_module_args(&[b"max-vary", b"257"]).unwrap_err(), "rcache.max-vary must be between 1 and 256, got 257");
        assert_eq!(apply_module_args(&[b"max-tags", b"20", b"max-vary", b"0"]).unwrap_err(), "rcache.max-vary must be between 1 and 256, got 0");
        assert_eq!(MAX_TAGS.get(), 10, "a rejected set of arguments applies nothing");
        assert!(MAX_TAGS.set(0).is_err());
        MAX_TAGS.set(64).unwrap();
    }
}
