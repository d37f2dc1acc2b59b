//! The model repository: one folder per model, `config.toml` (or `config.pbtxt`) inside,
//! numbered version folders beside it. Models can be loaded and unloaded while serving:
//! the set of models is swapped whole, so a request sees either the old model or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::served::{LoadedVersion, ModelVersion, ServedModel};
use super::Error;
use crate::models::{load_version, ModelConfig};

/// One row of the repository index.
#[derive(Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<u64>,
    pub ready: bool,
    pub reason: Option<String>,
}

pub struct Repository {
    dir: PathBuf,
    models: ArcSwap<BTreeMap<String, Arc<ServedModel>>>,
    /// Serialises loads and unloads (readers never wait on it).
    changing: Mutex<()>,
}

impl Repository {
    /// Loads every model folder under `dir`. A model that fails to load is kept, not ready,
    /// with the reason; only an unreadable `dir` is an error.
    pub fn open(dir: &Path) -> Result<Repository, String> {
        let mut models = BTreeMap::new();
        for name in model_folders(dir)? {
            let model = load_model(dir, &name);
            models.insert(name, Arc::new(model));
        }
        Ok(Repository {
            dir: dir.to_path_buf(),
            models: ArcSwap::from_pointee(models),
            changing: Mutex::new(()),
        })
    }

    pub fn get(&self, name: &str) -> Result<Arc<ServedModel>, Error> {
        self.models
            .load()
            .get(name)
            .cloned()
            .ok_or_else(|| unknown_model(name))
    }

    pub fn models(&self) -> Vec<Arc<ServedModel>> {
        self.models.load().values().cloned().collect()
    }

    pub fn all_ready(&self) -> bool {
        self.models.load().values().all(|m| m.is_ready())
    }

    /// Every model folder on disk, with the state of what is loaded from it.
    pub fn index(&self) -> Result<Vec<IndexEntry>, String> {
        let loaded = self.models.load();
        let mut entries = Vec::new();
        for name in model_folders(&self.dir)? {
            let Some(model) = loaded.get(&name) else {
                entries.push(IndexEntry {
                    name,
                    version: None,
                    ready: false,
                    reason: Some("unloaded".into()),
                });
                continue;
            };
            if let Some(error) = &model.error {
                entries.push(IndexEntry {
                    name,
                    version: None,
                    ready: false,
                    reason: Some(error.clone()),
                });
                continue;
            }
            for v in &model.versions {
                entries.push(IndexEntry {
                    name: name.clone(),
                    version: Some(v.version),
                    ready: v.state.is_ok(),
                    reason: v.state.as_ref().err().cloned(),
                });
            }
        }
        Ok(entries)
    }

    /// (Re)loads a model from disk. The model already serving keeps serving until the new one
    /// is ready, and keeps serving if the new one fails (the error is returned).
    /// Blocking: run it off the io threads.
    pub fn load(&self, name: &str) -> Result<(), String> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if !self.dir.join(name).is_dir() || name.contains('/') || name.starts_with('.') {
            return Err(format!(
                "no model folder '{name}' in {}",
                self.dir.display()
            ));
        }
        let model = load_model(&self.dir, name);
        if let (false, Some(reason)) = (model.is_ready(), model.reason()) {
            if self.get(name).is_ok_and(|old| old.is_ready()) {
                return Err(format!("model '{name}' kept serving its loaded versions; the new load failed: {reason}"));
            }
            self.insert(name, model);
            return Err(format!("model '{name}' failed to load: {reason}"));
        }
        self.insert(name, model);
        Ok(())
    }

    fn insert(&self, name: &str, model: ServedModel) {
        let mut models = BTreeMap::clone(&self.models.load());
        models.insert(name.to_string(), Arc::new(model));
        self.models.store(Arc::new(models));
    }

    /// Stops serving a model; requests already running finish on it.
    pub fn unload(&self, name: &str) -> Result<(), Error> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        let mut models = BTreeMap::clone(&self.models.load());
        models.remove(name).ok_or_else(|| unknown_model(name))?;
        self.models.store(Arc::new(models));
        tracing::info!(model = name, "model unloaded");
        Ok(())
    }
}

fn unknown_model(name: &str) -> Error {
    Error::not_found(format!("Request for unknown model: '{name}' is not found"))
}

/// The sub-folders of the repository, by name.
fn model_folders(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read model repository {}: {e}", dir.display()))?;
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|name| !name.starts_with('.'))
        .collect();
    names.sort();
    Ok(names)
}

/// Reads a model folder: its config, then each version the policy selects.
fn load_model(repository: &Path, name: &str) -> ServedModel {
    let dir = repository.join(name);
    let mut model = ServedModel {
        name: name.to_string(),
        config: ModelConfig::default(),
        versions: Vec::new(),
        error: None,
    };
    let config = ModelConfig::load(&dir).and_then(|c| {
        c.validate()
            .map_err(|e| format!("{}: {e}", config_file(&dir).display()))?;
        Ok(c)
    });
    match config {
        Ok(config) => model.config = config,
        Err(e) => {
            tracing::error!(model = name, "model not loaded: {e}");
            model.error = Some(e);
            return model;
        }
    }
    let on_disk = version_folders(&dir);
    // A built-in model needs no files: without version folders it serves version 1.
    let selected = match (on_disk.is_empty(), model.config.backend == "builtin") {
        (true, true) => vec![1],
        _ => model.config.version_policy.select(&on_disk),
    };
    if selected.is_empty() {
        let e = format!(
            "{}: no version folder matches the version policy",
            dir.display()
        );
        tracing::error!(model = name, "model not loaded: {e}");
        model.error = Some(e);
        return model;
    }
    for version in selected {
        let state = load_version(name, &model.config, &dir.join(version.to_string()))
            .and_then(|loaded| LoadedVersion::new(loaded, &model.config, name))
            .map_err(|e| format!("{}: {e}", config_file(&dir).display()));
        match &state {
            Ok(_) => {
                tracing::info!(model = name, version, backend = %model.config.backend, "model loaded")
            }
            Err(e) => tracing::error!(model = name, version, "version not loaded: {e}"),
        }
        model.versions.push(ModelVersion { version, state });
    }
    model
}

fn config_file(dir: &Path) -> PathBuf {
    let toml = dir.join("config.toml");
    if toml.exists() {
        toml
    } else {
        dir.join("config.pbtxt")
    }
}

/// The numbered sub-folders of a model folder, ascending.
fn version_folders(dir: &Path) -> Vec<u64> {
    let mut versions: Vec<u64> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    versions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ErrorKind;

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
            "backend = \"builtin\"\nbuiltin = \"identity\"\nversion_policy = { all = true }\n",
        );
        std::fs::create_dir_all(dir.join("echo/3")).unwrap();
        std::fs::create_dir_all(dir.join("echo/12")).unwrap();
        write(
            &dir,
            "typo",
            "backend = \"builtin\"\nbuiltn = \"identity\"\n",
        );
        write(&dir, "nope", "backend = \"tensorflow\"\n");
        write(
            &dir,
            "pinned",
            "backend = \"builtin\"\nbuiltin = \"identity\"\nversion_policy = { specific = [4] }\n",
        );
        std::fs::create_dir_all(dir.join("pinned/3")).unwrap();
        let repo = Repository::open(&dir).unwrap();

        let add_sub = repo.get("add_sub").unwrap();
        assert!(add_sub.is_ready());
        assert_eq!(add_sub.version(None).unwrap().0, 1);
        let echo = repo.get("echo").unwrap();
        assert_eq!(
            echo.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            vec![3, 12]
        );
        assert_eq!(echo.version(None).unwrap().0, 12);
        assert_eq!(echo.version(Some("3")).unwrap().0, 3);
        assert_eq!(
            echo.version(Some("4")).err().map(|e| (e.kind, e.message)),
            Some((
                ErrorKind::NotFound,
                "Request for unknown model: 'echo' version 4 is not found".into()
            ))
        );
        let reason = |name| repo.get(name).unwrap().reason().unwrap();
        let typo = reason("typo");
        assert!(
            typo.contains("config.toml") && typo.contains("builtn"),
            "{typo}"
        );
        let nope = reason("nope");
        assert!(
            nope.contains("key 'backend'") && nope.contains("tensorflow"),
            "{nope}"
        );
        assert!(reason("pinned").contains("version policy"));
        assert!(!repo.all_ready());
        assert_eq!(
            repo.get("missing").err().map(|e| e.kind),
            Some(ErrorKind::NotFound)
        );

        let index = repo.index().unwrap();
        assert_eq!(index.len(), 6);
        assert_eq!(
            index[1],
            IndexEntry {
                name: "echo".into(),
                version: Some(3),
                ready: true,
                reason: None
            }
        );

        // Unload, then load again from disk; a failed reload keeps the old model serving.
        repo.unload("echo").unwrap();
        assert!(repo.get("echo").is_err());
        assert_eq!(repo.index().unwrap()[1].reason.as_deref(), Some("unloaded"));
        repo.load("echo").unwrap();
        assert!(repo.get("echo").unwrap().is_ready());
        write(
            &dir,
            "echo",
            "backend = \"builtin\"\nbuiltin = \"nothing\"\n",
        );
        let err = repo.load("echo").unwrap_err();
        assert!(
            err.contains("kept serving") && err.contains("nothing"),
            "{err}"
        );
        assert!(repo.get("echo").unwrap().is_ready());
        assert!(repo.load("../etc").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
