//! The layers of strategy settings, lowest first: the built-in defaults; settings fitted on validation frames
//! that ship beside the weights (`strategies.toml`, and `gfnet.toml` from `saccade calibrate`); what the user
//! gave (`[strategies.*]` of a config file, `saccade eval --strategy-config`). See [`effective_configs`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use saccade_runtime::focus::{GfNetConfig, StrategyConfigs};

/// Fitted strategy settings that ship beside the weights, in the format of [`StrategyFile`].
pub const FITTED_STRATEGIES_FILE: &str = "strategies.toml";

/// A TOML file of strategy settings: tables named like the sections of [`StrategyConfigs`] (`[topk]`,
/// `[gfnet]`, `[zoom]`, `[coarse2fine]`, `[fullres]`, `[downsample]`), each with any of that section's keys.
/// Used for `strategies.toml` beside the weights and for `saccade eval --strategy-config`.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyFile {
    pub path: PathBuf,
    /// The file as written: which sections and keys it sets.
    pub raw: toml::Table,
    /// The file's settings; sections and keys it leaves out are at their defaults.
    pub configs: StrategyConfigs,
}

/// What is wrong with a file of strategy settings: every variant names the file, and the section, key
/// or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum StrategyFileError {
    #[error("strategy settings {}: {reason}", path.display())]
    Toml {
        path: PathBuf,
        #[source]
        reason: toml::de::Error,
    },
    #[error(
        "strategy settings {}: unknown section `{section}`, expected tables named {}",
        path.display(),
        expected.join(", ")
    )]
    UnknownSection {
        path: PathBuf,
        section: String,
        expected: Vec<String>,
    },
    #[error(
        "strategy settings {}: `{section}` is a {found}, expected a table `[{section}]`",
        path.display()
    )]
    NotATable {
        path: PathBuf,
        section: String,
        found: &'static str,
    },
    #[error(
        "strategy settings {}: unknown key `{section}.{key}`, expected one of {}",
        path.display(),
        expected.join(", ")
    )]
    UnknownKey {
        path: PathBuf,
        section: String,
        key: String,
        expected: Vec<String>,
    },
    /// The built-in defaults the file is checked against would not serialise (a bug, not the file's fault).
    #[error("strategy settings {}: the built-in defaults: {reason}", path.display())]
    Defaults {
        path: PathBuf,
        #[source]
        reason: serde_json::Error,
    },
}

impl StrategyFile {
    /// Parses and checks `text`; errors name `path` and, for a key no strategy has, the key.
    pub fn parse(text: &str, path: &Path) -> Result<Self, StrategyFileError> {
        let toml_error = |reason| StrategyFileError::Toml {
            path: path.to_path_buf(),
            reason,
        };
        let raw: toml::Table = toml::from_str(text).map_err(toml_error)?;
        let known = serde_json::to_value(StrategyConfigs::default()).map_err(|reason| {
            StrategyFileError::Defaults {
                path: path.to_path_buf(),
                reason,
            }
        })?;
        let sections: Vec<String> = known
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        for (name, value) in &raw {
            let Some(known_keys) = known.get(name).and_then(|v| v.as_object()) else {
                return Err(StrategyFileError::UnknownSection {
                    path: path.to_path_buf(),
                    section: name.clone(),
                    expected: sections,
                });
            };
            let Some(table) = value.as_table() else {
                return Err(StrategyFileError::NotATable {
                    path: path.to_path_buf(),
                    section: name.clone(),
                    found: value.type_str(),
                });
            };
            if let Some(key) = table.keys().find(|k| !known_keys.contains_key(*k)) {
                let mut expected: Vec<String> = known_keys.keys().cloned().collect();
                expected.sort_unstable();
                return Err(StrategyFileError::UnknownKey {
                    path: path.to_path_buf(),
                    section: name.clone(),
                    key: key.clone(),
                    expected,
                });
            }
        }
        let configs: StrategyConfigs = toml::from_str(text).map_err(toml_error)?;
        Ok(Self {
            path: path.to_path_buf(),
            raw,
            configs,
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading strategy settings {}", path.display()))?;
        Ok(Self::parse(&text, path)?)
    }

    /// The sections (strategy names) the file has a table for.
    pub fn sections(&self) -> BTreeSet<&str> {
        self.raw.keys().map(String::as_str).collect()
    }

    /// `base` with every key this file sets replaced by the file's value; keys it leaves out keep `base`'s.
    pub fn overlay(&self, base: &StrategyConfigs) -> anyhow::Result<StrategyConfigs> {
        let mut merged = serde_json::to_value(base)?;
        for (name, table) in &self.raw {
            let (Some(section), Some(table)) = (merged.get_mut(name), table.as_table()) else {
                continue; // `parse` let only known sections with tables through
            };
            for (key, value) in table {
                section[key] = serde_json::to_value(value)?;
            }
        }
        serde_json::from_value(merged)
            .with_context(|| format!("applying strategy settings {}", self.path.display()))
    }
}

/// `strategies.toml` beside the weights, if there is one.
pub fn load_fitted_strategies(weights_dir: &Path) -> anyhow::Result<Option<StrategyFile>> {
    let path = weights_dir.join(FITTED_STRATEGIES_FILE);
    if !path.exists() {
        return Ok(None);
    }
    StrategyFile::load(&path).map(Some)
}

/// Replaces each section of `to` for which `take(section name, section of `to` is at its default)` holds by
/// that of `from`.
fn replace_sections(
    to: &mut StrategyConfigs,
    from: &StrategyConfigs,
    take: impl Fn(&str, bool) -> bool,
) {
    let defaults = StrategyConfigs::default();
    // Destructured without `..`: a new section in `StrategyConfigs` fails to compile here until it is listed.
    let StrategyConfigs {
        topk,
        gfnet,
        zoom,
        coarse2fine,
        fullres,
        downsample,
        glance_only,
    } = from;
    macro_rules! replace {
        ($($section:ident),*) => {$(
            // A section's TOML name spells the strategy's name (`glance-only`), not the field's.
            if take(&stringify!($section).replace('_', "-"), to.$section == defaults.$section) {
                to.$section = $section.clone();
            }
        )*};
    }
    replace!(
        topk,
        gfnet,
        zoom,
        coarse2fine,
        fullres,
        downsample,
        glance_only
    );
}

/// The settings a run uses: `configs` (what the user gave) where a section differs from its default; else the
/// section of `strategies.toml` beside the weights, where it has that table; else, for gfnet only, the
/// calibrated thresholds of `gfnet.toml` beside the weights; else the default.
pub fn effective_configs(
    configs: &StrategyConfigs,
    weights_dir: &Path,
) -> anyhow::Result<StrategyConfigs> {
    let mut configs = configs.clone();
    let fitted = load_fitted_strategies(weights_dir)?;
    let mut gfnet_fitted = false;
    if let Some(fitted) = &fitted {
        let sections = fitted.sections();
        gfnet_fitted = sections.contains("gfnet");
        replace_sections(&mut configs, &fitted.configs, |name, is_default| {
            let take = is_default && sections.contains(name);
            if take {
                tracing::info!("{name}: fitted settings from {}", fitted.path.display());
            }
            take
        });
    }
    if !gfnet_fitted && configs.gfnet == saccade_runtime::focus::GfNetConfig::default() {
        if let Some(calibrated) = load_calibrated(weights_dir)? {
            tracing::info!("gfnet: calibrated thresholds {:?}", calibrated.eta);
            configs.gfnet = calibrated;
        }
    }
    Ok(configs)
}

/// The settings of `saccade eval --strategy-config`: the defaults with the fitted settings beside the weights
/// applied ([`effective_configs`]), then every key `user` sets on top.
pub fn configs_with_user_file(
    user: Option<&StrategyFile>,
    weights_dir: &Path,
) -> anyhow::Result<StrategyConfigs> {
    let fitted = effective_configs(&StrategyConfigs::default(), weights_dir)?;
    match user {
        Some(file) => file.overlay(&fitted),
        None => Ok(fitted),
    }
}

/// The `[gfnet]` table as written by calibrate.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CalibratedGfNet {
    pub gfnet: GfNetConfig,
}

/// Calibrated gfnet settings beside the weights, if there are any.
pub fn load_calibrated(weights_dir: &Path) -> anyhow::Result<Option<GfNetConfig>> {
    let path = weights_dir.join("gfnet.toml");
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let table: CalibratedGfNet = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("calibrated thresholds {}: {e}", path.display()))?;
    Ok(Some(table.gfnet))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use saccade_runtime::focus::{GfNetConfig, TopKConfig};

    fn weights_dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn fitted_strategies_replace_default_sections_and_take_precedence_over_gfnet_toml() {
        let dir = weights_dir_with(&[
            (
                FITTED_STRATEGIES_FILE,
                "[topk]\nk = 3\nmin_score = 0.4\n[gfnet]\neta = [0.5]\n",
            ),
            ("gfnet.toml", "[gfnet]\neta = [0.9]\n"),
        ]);
        let configs = effective_configs(&StrategyConfigs::default(), dir.path()).unwrap();
        assert_eq!(configs.topk.k, 3);
        assert_eq!(configs.topk.detect.min_score, 0.4);
        // Keys the file leaves out are at their defaults.
        assert_eq!(configs.topk.nms_iou, TopKConfig::default().nms_iou);
        assert_eq!(configs.gfnet.eta, [0.5]);
        assert_eq!(configs.zoom, StrategyConfigs::default().zoom);
    }

    #[test]
    fn gfnet_toml_applies_when_strategies_toml_has_no_gfnet_table() {
        let dir = weights_dir_with(&[
            (FITTED_STRATEGIES_FILE, "[topk]\nk = 3\n"),
            ("gfnet.toml", "[gfnet]\neta = [0.9]\n"),
        ]);
        let configs = effective_configs(&StrategyConfigs::default(), dir.path()).unwrap();
        assert_eq!(configs.gfnet.eta, [0.9]);
        assert_eq!(configs.topk.k, 3);
        // And without strategies.toml, as before.
        let dir = weights_dir_with(&[("gfnet.toml", "[gfnet]\neta = [0.9]\n")]);
        let configs = effective_configs(&StrategyConfigs::default(), dir.path()).unwrap();
        assert_eq!(configs.gfnet.eta, [0.9]);
        assert_eq!(configs.topk, TopKConfig::default());
    }

    #[test]
    fn a_users_non_default_section_wins_over_fitted_settings() {
        let dir = weights_dir_with(&[
            (
                FITTED_STRATEGIES_FILE,
                "[topk]\nk = 3\n[gfnet]\neta = [0.5]\n",
            ),
            ("gfnet.toml", "[gfnet]\neta = [0.9]\n"),
        ]);
        let mut user = StrategyConfigs::default();
        user.topk.k = 2;
        user.gfnet.max_steps = 3;
        let configs = effective_configs(&user, dir.path()).unwrap();
        assert_eq!(configs.topk.k, 2);
        assert_eq!(configs.gfnet.max_steps, 3);
        assert_eq!(configs.gfnet.eta, GfNetConfig::default().eta);
    }

    #[test]
    fn strategy_config_keys_override_the_fitted_ones_even_when_they_equal_the_default() {
        let dir = weights_dir_with(&[(
            FITTED_STRATEGIES_FILE,
            "[topk]\nk = 3\nnms_iou = 0.2\n[gfnet]\neta = [0.5]\n",
        )]);
        let user = StrategyFile::parse(
            "[topk]\nk = 6\n[gfnet]\nmin_score = 0.05\n",
            Path::new("mine.toml"),
        )
        .unwrap();
        let configs = configs_with_user_file(Some(&user), dir.path()).unwrap();
        assert_eq!(configs.topk.k, 6, "the user's key wins");
        assert_eq!(
            configs.topk.nms_iou, 0.2,
            "keys the user left out stay fitted"
        );
        assert_eq!(configs.gfnet.eta, [0.5]);
        assert_eq!(configs.gfnet.detect.min_score, 0.05);
        let without = configs_with_user_file(None, dir.path()).unwrap();
        assert_eq!(without.topk.k, 3);
    }

    #[test]
    fn strategy_file_errors_name_the_path_and_the_unknown_key() {
        let err = StrategyFile::parse("[topk]\nkk = 3\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.toml") && err.contains("`topk.kk`"), "{err}");
        assert!(err.contains("min_score"), "lists the known keys: {err}");
        let err = StrategyFile::parse("[saliency]\nk = 3\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown section `saliency`"), "{err}");
        let err = StrategyFile::parse("topk = 3\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a table `[topk]`"), "{err}");
        let err = StrategyFile::parse("[topk]\nk = \"six\"\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.toml"), "{err}");
        let dir = weights_dir_with(&[(FITTED_STRATEGIES_FILE, "[topk\n")]);
        let err = effective_configs(&StrategyConfigs::default(), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(FITTED_STRATEGIES_FILE), "{err}");
    }
}
