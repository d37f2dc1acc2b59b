//! The model repository: one folder per model, `config.toml` inside, numbered version folders.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::builtin::{builtin, BUILTIN_NAMES};
use super::{Model, TensorSpec};

/// A model as the server sees it: its description and, when it loaded, the runnable model.
pub struct ServedModel {
    pub name: String,
    /// Versions served, ascending; a model folder without version folders serves "1".
    pub versions: Vec<u64>,
    pub platform: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub state: Result<Box<dyn Model>, String>,
}

impl ServedModel {
    pub fn is_ready(&self) -> bool {
        self.state.is_ok()
    }

    pub fn latest_version(&self) -> u64 {
        self.versions.last().copied().unwrap_or(1)
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LookupError {
    UnknownModel(String),
    UnknownVersion { model: String, version: String },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::UnknownModel(name) => write!(f, "unknown model '{name}'"),
            LookupError::UnknownVersion { model, version } => {
                write!(f, "unknown version '{version}' of model '{model}'")
            }
        }
    }
}

#[derive(Default)]
pub struct Repository {
    models: BTreeMap<String, ServedModel>,
}

impl Repository {
    /// Loads every model folder under `dir`. A model that fails to load is kept, not ready,
    /// with the reason; only an unreadable `dir` is an error.
    pub fn load(dir: &Path) -> Result<Repository, String> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot read model repository {}: {e}", dir.display()))?;
        let mut repository = Repository::default();
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            let model = load_model(&name, &path);
            match &model.state {
                Ok(_) => tracing::info!(model = %name, versions = ?model.versions, "model loaded"),
                Err(reason) => tracing::error!(model = %name, "model not loaded: {reason}"),
            }
            repository.models.insert(name, model);
        }
        Ok(repository)
    }

    pub fn models(&self) -> impl Iterator<Item = &ServedModel> {
        self.models.values()
    }

    /// Finds a model, and checks `version` (when given) is one it serves.
    pub fn get(&self, name: &str, version: Option<&str>) -> Result<&ServedModel, LookupError> {
        let model = self
            .models
            .get(name)
            .ok_or_else(|| LookupError::UnknownModel(name.to_string()))?;
        if let Some(version) = version {
            let known = version
                .parse::<u64>()
                .is_ok_and(|v| model.versions.contains(&v));
            if !known {
                return Err(LookupError::UnknownVersion {
                    model: name.to_string(),
                    version: version.to_string(),
                });
            }
        }
        Ok(model)
    }

    pub fn all_ready(&self) -> bool {
        self.models.values().all(ServedModel::is_ready)
    }
}

/// `config.toml` of one model.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelConfig {
    backend: String,
    /// For `backend = "builtin"`: which built-in model (default: the folder name).
    builtin: Option<String>,
}

fn load_model(name: &str, dir: &Path) -> ServedModel {
    let mut model = ServedModel {
        name: name.to_string(),
        versions: version_folders(dir),
        platform: String::new(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        state: Err(String::new()),
    };
    let config_path = dir.join("config.toml");
    let config = std::fs::read_to_string(&config_path)
        .map_err(|e| e.to_string())
        .and_then(|text| toml::from_str::<ModelConfig>(&text).map_err(|e| e.to_string()));
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            model.state = Err(format!("{}: {}", config_path.display(), e.trim_end()));
            return model;
        }
    };
    model.platform = config.backend.clone();
    if config.backend != "builtin" {
        model.state = Err(format!(
            "{}: key 'backend': unknown backend '{}' (available: builtin)",
            config_path.display(),
            config.backend
        ));
        return model;
    }
    let which = config.builtin.as_deref().unwrap_or(name);
    match builtin(which) {
        Some(b) => {
            model.inputs = b.inputs;
            model.outputs = b.outputs;
            model.state = Ok(b.model);
        }
        None => {
            model.state = Err(format!(
                "{}: key 'builtin': unknown built-in model '{which}' (available: {})",
                config_path.display(),
                BUILTIN_NAMES.join(", ")
            ))
        }
    }
    model
}

/// The numbered sub-folders of a model folder, ascending; `[1]` when there are none.
fn version_folders(dir: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    if versions.is_empty() {
        versions.push(1);
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, model: &str, config: &str) {
        std::fs::create_dir_all(dir.join(model)).unwrap();
        std::fs::write(dir.join(model).join("config.toml"), config).unwrap();
    }

    #[test]
    fn loads_good_models_beside_broken_ones() {
        let dir = std::env::temp_dir().join(format!("tensord-repo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(&dir, "add_sub", "backend = \"builtin\"\n");
        write(
            &dir,
            "echo",
            "backend = \"builtin\"\nbuiltin = \"identity\"\n",
        );
        std::fs::create_dir_all(dir.join("echo/3")).unwrap();
        std::fs::create_dir_all(dir.join("echo/12")).unwrap();
        write(
            &dir,
            "typo",
            "backend = \"builtin\"\nbuiltn = \"identity\"\n",
        );
        write(&dir, "nope", "backend = \"tensorflow\"\n");
        let repo = Repository::load(&dir).unwrap();

        let add_sub = repo.get("add_sub", None).unwrap();
        assert!(add_sub.is_ready());
        assert_eq!(add_sub.versions, vec![1]);
        assert_eq!(add_sub.inputs.len(), 2);
        let echo = repo.get("echo", Some("12")).unwrap();
        assert_eq!(echo.versions, vec![3, 12]);
        assert_eq!(echo.latest_version(), 12);
        assert_eq!(
            repo.get("echo", Some("4")).err(),
            Some(LookupError::UnknownVersion {
                model: "echo".into(),
                version: "4".into()
            })
        );
        let reason = |name| {
            repo.get(name, None)
                .unwrap()
                .state
                .as_ref()
                .err()
                .unwrap()
                .clone()
        };
        let typo = reason("typo");
        assert!(
            typo.contains("config.toml") && typo.contains("builtn"),
            "{typo}"
        );
        let nope = reason("nope");
        assert!(
            nope.contains("backend") && nope.contains("tensorflow"),
            "{nope}"
        );
        assert!(!repo.all_ready());
        assert!(matches!(
            repo.get("missing", None),
            Err(LookupError::UnknownModel(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
