//! What `/set` changes: the sampling options and the answer length of the
//! turns that follow. A bad value is refused with the reason and changes
//! nothing.

use hearth::engine::SamplingParams;

/// Every key `/set` takes, for `/help` and for the error that names them.
pub const KEYS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "repetition_penalty",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "max_tokens",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub sampling: SamplingParams,
    /// `None`: an answer may run to the end of the context.
    pub max_tokens: Option<usize>,
}

fn number<T: std::str::FromStr>(key: &str, value: &str, what: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{key}: `{value}` is not {what}"))
}

impl Settings {
    /// The settings of the command line's flags, checked as `/set` checks them.
    pub fn new(sampling: SamplingParams, max_tokens: Option<usize>) -> Result<Settings, String> {
        let s = Settings {
            sampling,
            max_tokens,
        };
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> Result<(), String> {
        if self.max_tokens == Some(0) {
            return Err("max_tokens: must be at least 1 (or `none`)".into());
        }
        self.sampling.validate().map_err(|e| match e {
            hearth::HearthError::InvalidField { field, message } => format!("{field}: {message}"),
            e => e.to_string(),
        })
    }

    /// `/set KEY VALUE`; on an error nothing changes. Keys may use `-` for `_`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = key.replace('-', "_");
        let mut next = self.clone();
        let sp = &mut next.sampling;
        let real = "a number";
        match key.as_str() {
            "temperature" => sp.temperature = number(&key, value, real)?,
            "top_k" => sp.top_k = number(&key, value, "a whole number (0 = off)")?,
            "top_p" => sp.top_p = number(&key, value, real)?,
            "min_p" => sp.min_p = number(&key, value, real)?,
            "repetition_penalty" => sp.repetition_penalty = number(&key, value, real)?,
            "presence_penalty" => sp.presence_penalty = number(&key, value, real)?,
            "frequency_penalty" => sp.frequency_penalty = number(&key, value, real)?,
            "seed" => {
                sp.seed = match value {
                    "none" | "random" => None,
                    v => Some(number(&key, v, "a whole number or `none`")?),
                }
            }
            "max_tokens" => {
                next.max_tokens = match value {
                    "none" => None,
                    v => Some(number(&key, v, "a whole number or `none`")?),
                }
            }
            _ => {
                return Err(format!(
                    "unknown setting `{key}`; /set takes {}",
                    KEYS.join(", ")
                ))
            }
        }
        next.check()?;
        *self = next;
        Ok(())
    }

    /// One `key value` per line, as `/set` would take them back.
    pub fn describe(&self) -> String {
        let sp = &self.sampling;
        let opt = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        [
            ("temperature", sp.temperature.to_string()),
            ("top_k", sp.top_k.to_string()),
            ("top_p", sp.top_p.to_string()),
            ("min_p", sp.min_p.to_string()),
            ("repetition_penalty", sp.repetition_penalty.to_string()),
            ("presence_penalty", sp.presence_penalty.to_string()),
            ("frequency_penalty", sp.frequency_penalty.to_string()),
            ("seed", opt(sp.seed.map(|s| s.to_string()))),
            ("max_tokens", opt(self.max_tokens.map(|m| m.to_string()))),
        ]
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greedy() -> Settings {
        Settings::new(SamplingParams::default(), Some(256)).unwrap()
    }

    #[test]
    fn good_values_apply_and_describe_round_trips() {
        let mut s = greedy();
        s.set("temperature", "0.7").unwrap();
        s.set("top-p", "0.9").unwrap();
        s.set("top_k", "40").unwrap();
        s.set("seed", "42").unwrap();
        s.set("max_tokens", "none").unwrap();
        assert_eq!(s.sampling.temperature, 0.7);
        assert_eq!(s.sampling.top_p, 0.9);
        assert_eq!(s.sampling.top_k, 40);
        assert_eq!(s.sampling.seed, Some(42));
        assert_eq!(s.max_tokens, None);
        let mut back = greedy();
        for line in s.describe().lines() {
            let (k, v) = line.split_once(' ').unwrap();
            back.set(k, v).unwrap();
        }
        assert_eq!(back, s);
    }

    #[test]
    fn bad_values_name_the_setting_and_change_nothing() {
        let mut s = greedy();
        let before = s.clone();
        for (k, v, needle) in [
            ("temperature", "-1", "temperature: must be >= 0"),
            ("temperature", "hot", "temperature: `hot` is not a number"),
            ("top_p", "0", "top_p: must be in (0, 1]"),
            ("top_k", "-3", "top_k: `-3` is not a whole number"),
            ("seed", "1.5", "seed: `1.5` is not a whole number"),
            ("max_tokens", "0", "max_tokens: must be at least 1"),
            ("temprature", "1", "unknown setting `temprature`"),
        ] {
            let e = s.set(k, v).unwrap_err();
            assert!(e.contains(needle), "{k} {v}: {e}");
            assert_eq!(s, before, "{k} {v} changed the settings");
        }
    }
}
