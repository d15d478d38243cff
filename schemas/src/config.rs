//! Loading flightrec's TOML configurations (the recorder's and the collector's): one error
//! type, file-named parse errors, and keys that were renamed refused with their new name.

use std::path::{Path, PathBuf};

/// A configuration file or value is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A key that an older version read; the message names its replacement.
    #[error("config {path}: `{old}` was renamed: write `{new}` (e.g. {example})")]
    Renamed {
        /// The file.
        path: PathBuf,
        /// The old key, dotted from the top (`governor.cooldown_ms`).
        old: String,
        /// The key to write instead.
        new: String,
        /// A value in the new form.
        example: &'static str,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl From<crate::units::UnitError> for ConfigError {
    fn from(e: crate::units::UnitError) -> Self {
        ConfigError::Invalid(e.to_string())
    }
}

/// What `--check-config` prints in place of a secret (tokens, keys).
pub const REDACTED: &str = "<redacted>";

/// Replaces `secret` with [`REDACTED`] unless it is empty.
pub fn redact(secret: &mut String) {
    if !secret.is_empty() {
        *secret = REDACTED.into();
    }
}

/// Reads a bearer token from the first line of `path` for the setting `key` (e.g.
/// `hook.token_file`); tokens are at least 16 characters.
pub fn read_token_file(key: &str, path: &std::path::Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid(format!("{key} {}: {e}", path.display())))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.len() < 16 {
        return Err(ConfigError::Invalid(format!(
            "{key} {}: the token must be at least 16 characters",
            path.display()
        )));
    }
    Ok(token)
}

/// A key renamed in a configuration: `table` (`""` for the top level, `rules` for every entry
/// of an array of tables), the old and the new key, and an example value.
pub type Rename = (&'static str, &'static str, &'static str, &'static str);

/// Reads the TOML file at `path` as a `T`; errors name the file (and the line and column).
/// Keys in `renamed` are refused with their new name.
pub fn read_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    renamed: &[Rename],
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_named(&text, path, renamed)
}

/// Parses TOML text as a `T` (errors name it `<config>`).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    renamed: &[Rename],
) -> Result<T, ConfigError> {
    parse_named(text, Path::new("<config>"), renamed)
}

fn parse_named<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
    renamed: &[Rename],
) -> Result<T, ConfigError> {
    let parse = |e: toml::de::Error| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if !renamed.is_empty() {
        let table: toml::Table = toml::from_str(text).map_err(parse)?;
        check_renamed(&table, path, renamed)?;
    }
    toml::from_str(text).map_err(parse)
}

fn check_renamed(table: &toml::Table, path: &Path, renamed: &[Rename]) -> Result<(), ConfigError> {
    for &(section, old, new, example) in renamed {
        let tables: Vec<&toml::Table> = match section {
            "" => vec![table],
            s => match table.get(s) {
                Some(toml::Value::Table(t)) => vec![t],
                Some(toml::Value::Array(a)) => a.iter().filter_map(|v| v.as_table()).collect(),
                _ => Vec::new(),
            },
        };
        if tables.iter().any(|t| t.contains_key(old)) {
            let dotted = |k: &str| {
                if section.is_empty() {
                    k.to_owned()
                } else {
                    format!("{section}.{k}")
                }
            };
            return Err(ConfigError::Renamed {
                path: path.to_owned(),
                old: dotted(old),
                new: dotted(new),
                example,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[expect(dead_code, reason = "only parsed")]
    struct Cfg {
        #[serde(default)]
        governor: toml::Table,
        #[serde(default)]
        rules: Vec<toml::Table>,
    }

    const RENAMED: &[Rename] = &[
        ("governor", "cooldown_ms", "cooldown", "cooldown = \"5s\""),
        ("rules", "post_ms", "post", "post = \"200ms\""),
    ];

    #[test]
    fn an_old_key_names_the_new_one() {
        let e = parse_toml::<Cfg>("[governor]\ncooldown_ms = 5000\n", RENAMED).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("`governor.cooldown_ms` was renamed"), "{msg}");
        assert!(msg.contains("`governor.cooldown`"), "{msg}");
        let e = parse_toml::<Cfg>("[[rules]]\npost_ms = 1\n", RENAMED).unwrap_err();
        assert!(e.to_string().contains("`rules.post`"), "{e}");
        parse_toml::<Cfg>("[governor]\ncooldown = \"5s\"\n", RENAMED).unwrap();
    }
}
