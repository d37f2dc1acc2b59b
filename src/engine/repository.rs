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
            let model = load_model(&dir.join(&name), &name, None);
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
        let mut names = model_folders(&self.dir)?;
        // Models a load request created from its files have no folder.
        names.extend(
            loaded
                .keys()
                .filter(|n| !self.dir.join(n).is_dir())
                .cloned(),
        );
        names.sort();
        let mut entries = Vec::new();
        for name in names {
            let unversioned = |reason: &str| IndexEntry {
                name: name.clone(),
                version: None,
                ready: false,
                reason: Some(reason.to_string()),
            };
            let Some(model) = loaded.get(&name) else {
                entries.push(unversioned("unloaded"));
                continue;
            };
            if let Some(error) = &model.error {
                entries.push(unversioned(error));
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

    /// (Re)loads a model from disk, or from what the load request carries. The model already
    /// serving keeps serving until the new one is ready, and keeps serving if the new one fails
    /// (the error is returned). Blocking: run it off the io threads.
    pub fn load(&self, name: &str, overrides: Overrides) -> Result<(), String> {
        let _one_at_a_time = self.changing.lock().unwrap_or_else(|e| e.into_inner());
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("'{name}' is not a model name"));
        }
        let model = if overrides.files.is_empty() {
            if !self.dir.join(name).is_dir() {
                return Err(format!(
                    "no model folder '{name}' in {}",
                    self.dir.display()
                ));
            }
            load_model(&self.dir.join(name), name, overrides.config)
        } else {
            // As Triton: the files are the whole model folder, so its config comes with them.
            let config = overrides.config.ok_or(
                "file: parameters replace the model folder and need a config parameter with them",
            )?;
            let staged = stage(name, &overrides.files)?;
            let model = load_model(&staged, name, Some(config));
            // Every backend has read what it needs into memory by now.
            let _ = std::fs::remove_dir_all(&staged);
            model
        };
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

/// What a load request may replace: the config, and the model folder's files.
#[derive(Debug, Default)]
pub struct Overrides {
    pub config: Option<ModelConfig>,
    /// (path in the model folder, `<version>/<file>`; contents)
    pub files: Vec<(String, Vec<u8>)>,
}

impl Overrides {
    /// A load request's `config` parameter: a model config in Triton's JSON.
    pub fn set_config(&mut self, json: &str) -> Result<(), Error> {
        let config = crate::models::config_from_json(json)
            .map_err(|e| Error::invalid(format!("load parameter 'config': {e}")))?;
        self.config = Some(config);
        Ok(())
    }
}

/// Writes a load request's files into a fresh folder of their own; a path that is not
/// `<version>/<file>` inside it is refused.
fn stage(name: &str, files: &[(String, Vec<u8>)]) -> Result<PathBuf, String> {
    static STAGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STAGED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tensord-{}-{name}-{n}", std::process::id()));
    let write = |path: &str, contents: &[u8]| -> Result<(), String> {
        let relative = Path::new(path);
        let mut parts = relative.components();
        let versioned = matches!(parts.next(), Some(std::path::Component::Normal(v))
            if v.to_str().is_some_and(|v| v.parse::<u64>().is_ok()));
        if !versioned
            || parts.clone().next().is_none()
            || !parts.all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return Err(format!(
                "file:{path}: a model file must be named <version>/<file> inside the model folder"
            ));
        }
        let target = dir.join(relative);
        let parent = target.parent().unwrap_or(&dir);
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&target, contents))
            .map_err(|e| format!("file:{path}: cannot write {}: {e}", target.display()))
    };
    let written = files
        .iter()
        .try_for_each(|(path, contents)| write(path, contents));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(dir)
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

/// Reads a model folder: its config (or `config`, a load request's), then each version the
/// policy selects.
fn load_model(dir: &Path, name: &str, config: Option<ModelConfig>) -> ServedModel {
    let source = match &config {
        Some(_) => "the load request's config".to_string(),
        None => config_file(dir).display().to_string(),
    };
    let mut model = ServedModel {
        name: name.to_string(),
        config: ModelConfig::default(),
        versions: Vec::new(),
        error: None,
    };
    let config = config
        .map_or_else(|| ModelConfig::load(dir), Ok)
        .and_then(|c| {
            c.validate().map_err(|e| format!("{source}: {e}"))?;
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
    let on_disk = version_folders(dir);
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
            .and_then(|loaded| LoadedVersion::new(loaded, &model.config, name, dir))
            .map_err(|e| format!("{source}: {e}"));
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
        repo.load("echo", Overrides::default()).unwrap();
        assert!(repo.get("echo").unwrap().is_ready());
        write(
            &dir,
            "echo",
            "backend = \"builtin\"\nbuiltin = \"nothing\"\n",
        );
        let err = repo.load("echo", Overrides::default()).unwrap_err();
        assert!(
            err.contains("kept serving") && err.contains("nothing"),
            "{err}"
        );
        assert!(repo.get("echo").unwrap().is_ready());
        assert!(repo.load("../etc", Overrides::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_requests_replace_the_config_or_bring_the_files() {
        let dir = std::env::temp_dir().join(format!("tensord-overrides-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        write(
            &dir,
            "echo",
            "backend = \"builtin\"\nbuiltin = \"identity\"\n",
        );
        let repo = Repository::open(&dir).unwrap();
        let config = |text: &str| crate::models::config_from_json(text).unwrap();
        let batching = r#"{"backend": "identity", "max_batch_size": 4, "dynamic_batching": {}}"#;
        repo.load(
            "echo",
            Overrides {
                config: Some(config(batching)),
                files: Vec::new(),
            },
        )
        .unwrap();
        assert_eq!(repo.get("echo").unwrap().config.max_batch_size, 4);
        // A config that cannot load leaves the old model serving.
        let bad = r#"{"backend": "identity", "max_batch_size": 0, "dynamic_batching": {}}"#;
        let err = repo
            .load(
                "echo",
                Overrides {
                    config: Some(config(bad)),
                    files: Vec::new(),
                },
            )
            .unwrap_err();
        assert!(
            err.contains("the load request's config") && err.contains("dynamic_batching"),
            "{err}"
        );
        assert_eq!(repo.get("echo").unwrap().config.max_batch_size, 4);
        // Files make a model with no folder of its own; they need a config and proper paths.
        let files = |path: &str| vec![(path.to_string(), b"x".to_vec())];
        let identity = r#"{"backend": "identity"}"#;
        let created = Overrides {
            config: Some(config(identity)),
            files: files("1/anything.bin"),
        };
        repo.load("made", created).unwrap();
        assert!(repo.get("made").unwrap().is_ready());
        assert!(repo
            .index()
            .unwrap()
            .iter()
            .any(|e| e.name == "made" && e.ready));
        let no_config = Overrides {
            config: None,
            files: files("1/x"),
        };
        assert!(repo.load("made", no_config).unwrap_err().contains("config"));
        for path in ["../1/x", "1/../../x", "x/model.onnx", "1", "/1/x"] {
            let o = Overrides {
                config: Some(config(identity)),
                files: files(path),
            };
            let err = repo.load("other", o).unwrap_err();
            assert!(err.contains("<version>/<file>"), "{path}: {err}");
        }
        assert!(repo.get("other").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
