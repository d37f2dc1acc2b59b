//! The model repository: one folder per model, `config.toml` (or `config.pbtxt`) inside,
//! numbered version folders beside it. Models can be loaded and unloaded while serving (through
//! the API in explicit mode, from the disk in poll mode): the set of models is swapped whole, so
//! a request sees either the old model or the new one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};

use super::ensemble::Step;
use super::served::{LoadedVersion, ModelVersion, ServedModel};
use super::Error;
use crate::models::ovms_config::{self, OvmsPipeline};
use crate::models::{load_version, ModelConfig, Proto, TensorConfig, TensorSpec};

/// One row of the repository index.
#[derive(Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<u64>,
    pub ready: bool,
    pub reason: Option<String>,
}

/// Who changes which models are served (Triton's `--model-control-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelControl {
    /// Every model in the repository at start, and no others: load and unload are refused.
    None,
    /// The repository API loads and unloads models; `--load-model` chooses those loaded at start.
    Explicit,
    /// The repository is rescanned: new folders load, changed ones reload, removed ones unload.
    Poll,
}

/// How a repository opens.
#[derive(Clone, Debug)]
pub struct Options {
    pub control: ModelControl,
    /// Explicit mode: the models loaded at start (`*`: all of them).
    pub load_at_start: Vec<String>,
    /// Where a load request's files are staged, each load in a private folder of its own.
    pub staging_dir: PathBuf,
    /// The most threads one model version may start (instances × their intra-op threads).
    pub max_model_threads: usize,
    /// The most threads all the served models' versions may start together.
    pub max_total_threads: usize,
}

/// What a load may start: threads per version, and a share of the server's total.
struct Caps<'r> {
    per_version: usize,
    total: &'r ThreadTotal,
    /// The threads of the served models, the one being replaced left out.
    served: &'r dyn Fn() -> usize,
}

/// The server's cap on model threads, and the threads promised to loads in progress: a
/// load takes its share under this lock, so two loads checked at once cannot both take the
/// last threads.
struct ThreadTotal {
    cap: usize,
    promised: Mutex<usize>,
}

/// Threads promised to one load, given back when it is dropped: after the loaded model is
/// in the served map, so that every thread is always counted at least once.
struct Promise<'r> {
    total: &'r ThreadTotal,
    threads: usize,
}

impl ThreadTotal {
    /// `Err(left)` when fewer than `threads` are left.
    fn promise<'r>(
        &'r self,
        threads: usize,
        served: &dyn Fn() -> usize,
    ) -> Result<Promise<'r>, usize> {
        let mut promised = lock(&self.promised);
        let left = self.cap.saturating_sub(served().saturating_add(*promised));
        if threads > left {
            return Err(left);
        }
        *promised += threads;
        Ok(Promise {
            total: self,
            threads,
        })
    }
}

impl Drop for Promise<'_> {
    fn drop(&mut self) {
        *lock(&self.total.promised) -= self.threads;
    }
}

/// What poll mode compares: each file and folder of a model, with its size and mtime.
type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

pub struct Repository {
    /// The repository folder (`None`: the models an OVMS config.json lists).
    dir: Option<PathBuf>,
    models: ArcSwap<BTreeMap<String, Arc<ServedModel>>>,
    /// Serialises loads and unloads (readers never wait on it).
    changing: Mutex<()>,
    control: ModelControl,
    staging_dir: PathBuf,
    /// The staging folders of loads in progress, removed at shutdown if a load is still running.
    staged: Mutex<BTreeSet<PathBuf>>,
    /// Poll mode: each model folder as last seen.
    seen: Mutex<BTreeMap<String, Fingerprint>>,
    /// The models loading now (a second load of one of them is refused, not queued).
    loading: Mutex<BTreeSet<String>>,
    max_model_threads: usize,
    threads: ThreadTotal,
}

impl Repository {
    /// Loads the model folders under `dir` that `options` selects (all of them, except in
    /// explicit mode). A model that fails to load is kept, not ready, with the reason; an
    /// unreadable `dir`, or a model named to load at start that has no folder, is an error.
    pub fn open(dir: &Path, options: Options) -> Result<Repository, String> {
        let folders = model_folders(dir)?;
        let selected = match (options.control, options.load_at_start.as_slice()) {
            (ModelControl::Explicit, [all]) if all == "*" => folders.clone(),
            (ModelControl::Explicit, named) => {
                if named.iter().any(|n| n == "*") {
                    return Err("--load-model '*' must be the only --load-model".into());
                }
                if let Some(missing) = named.iter().find(|n| !folders.contains(n)) {
                    return Err(format!(
                        "--load-model '{missing}': no such model folder in the repository"
                    ));
                }
                named.to_vec()
            }
            (_, []) => folders.clone(),
            (_, _) => return Err("--load-model needs --model-control-mode explicit".into()),
        };
        let mut models = BTreeMap::new();
        let threads = ThreadTotal {
            cap: options.max_total_threads,
            promised: Mutex::new(0),
        };
        for name in selected {
            let model = load_at_start(&models, &threads, &options, &dir.join(&name), &name, None);
            models.insert(name, Arc::new(model));
        }
        // Ensembles are checked against the models they compose, once all have loaded.
        check_ensembles(&models);
        let seen = match options.control {
            ModelControl::Poll => (folders.iter())
                .map(|n| (n.clone(), fingerprint(&dir.join(n))))
                .collect(),
            _ => BTreeMap::new(),
        };
        Ok(Repository::serving(
            Some(dir.to_path_buf()),
            models,
            options,
            threads,
            seen,
        ))
    }

    /// Serves what OVMS's `config.json` at `file` lists: its models from their folders (with
    /// its shapes and layouts), its pipelines as ensembles over them. The set is fixed.
    pub fn open_ovms(file: &Path, options: Options) -> Result<Repository, String> {
        if options.control != ModelControl::None {
            return Err(
                "--ovms-config serves the models it lists: --model-control-mode must be none"
                    .into(),
            );
        }
        let ovms = ovms_config::read(file)?;
        let threads = ThreadTotal {
            cap: options.max_total_threads,
            promised: Mutex::new(0),
        };
        let mut models = BTreeMap::new();
        for entry in &ovms.models {
            let given = (entry.config.clone(), "--ovms-config");
            let mut model = load_at_start(
                &models,
                &threads,
                &options,
                &entry.dir,
                &entry.name,
                Some(given),
            );
            for version in &mut model.versions {
                let fitted = match &mut version.state {
                    Ok(loaded) => entry.fit(&mut loaded.inputs),
                    Err(_) => Ok(()),
                };
                if let Err(e) = fitted {
                    tracing::error!(model = entry.name, "version not loaded: {e}");
                    version.state = Err(e);
                }
            }
            models.insert(entry.name.clone(), Arc::new(model));
        }
        for pipeline in &ovms.pipelines {
            let model = pipeline_model(pipeline, &models);
            models.insert(pipeline.name.clone(), Arc::new(model));
        }
        check_ensembles(&models);
        Ok(Repository::serving(
            None,
            models,
            options,
            threads,
            BTreeMap::new(),
        ))
    }

    fn serving(
        dir: Option<PathBuf>,
        models: BTreeMap<String, Arc<ServedModel>>,
        options: Options,
        threads: ThreadTotal,
        seen: BTreeMap<String, Fingerprint>,
    ) -> Repository {
        Repository {
            dir,
            models: ArcSwap::from_pointee(models),
            changing: Mutex::new(()),
            control: options.control,
            staging_dir: options.staging_dir,
            staged: Mutex::new(BTreeSet::new()),
            seen: Mutex::new(seen),
            loading: Mutex::new(BTreeSet::new()),
            max_model_threads: options.max_model_threads,
            threads,
        }
    }

    /// The repository folder; none when serving an OVMS config.json.
    fn folder(&self) -> Result<&Path, String> {
        (self.dir.as_deref()).ok_or_else(|| "the models of --ovms-config are fixed".to_string())
    }

    pub fn control(&self) -> ModelControl {
        self.control
    }

    /// Poll mode's rescan: loads new model folders, reloads changed ones (a version that fails
    /// leaves the old model serving), unloads removed ones. Blocking.
    pub fn poll(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let folders = match model_folders(dir) {
            Ok(folders) => folders,
            Err(e) => return tracing::warn!("repository poll: {e}"),
        };
        let mut seen = lock(&self.seen);
        let removed: Vec<String> = (seen.keys())
            .filter(|n| !folders.contains(n))
            .cloned()
            .collect();
        for name in removed {
            seen.remove(&name);
            if self.unload(&name, false).is_ok() {
                tracing::info!(
                    model = name,
                    "repository poll: folder removed, model unloaded"
                );
            }
        }
        for name in folders {
            let now = fingerprint(&dir.join(&name));
            if seen.get(&name) == Some(&now) {
                continue;
            }
            seen.insert(name.clone(), now);
            match self.load(&name, Overrides::default()) {
                Ok(()) => tracing::info!(model = name, "repository poll: model (re)loaded"),
                Err(e) => tracing::error!(model = name, "repository poll: {e}"),
            }
        }
    }

    /// Removes the staging folders of loads still running (at shutdown).
    pub fn remove_staged(&self) {
        for dir in std::mem::take(&mut *lock(&self.staged)) {
            let _ = std::fs::remove_dir_all(dir);
        }
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
        let mut names = match &self.dir {
            Some(dir) => model_folders(dir)?,
            None => Vec::new(),
        };
        // Models a load request created from its files have no folder, nor do OVMS's.
        let foldered = |n: &String| self.dir.as_ref().is_some_and(|d| d.join(n).is_dir());
        names.extend(loaded.keys().filter(|n| !foldered(n)).cloned());
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
            let upstream = model.upstream.load();
            for v in &model.versions {
                let reason = v.state.as_ref().err().or(upstream.as_deref());
                entries.push(IndexEntry {
                    name: name.clone(),
                    version: Some(v.version),
                    ready: reason.is_none(),
                    reason: reason.cloned(),
                });
            }
        }
        Ok(entries)
    }

    /// (Re)loads a model from disk, or from what the load request carries. The model already
    /// serving keeps serving until the new one is ready, and keeps serving if the new one fails
    /// (the error is returned). Blocking: run it off the io threads.
    /// Loads of different models run side by side, and no lock is held while a model loads:
    /// a load that hangs (inside a backend) blocks nothing but a second load of its own name.
    pub fn load(&self, name: &str, overrides: Overrides) -> Result<(), String> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!("'{name}' is not a model name"));
        }
        let _loading = Claim::new(&self.loading, name.to_string()).ok_or_else(|| {
            format!("model '{name}' is already loading; try again when that load ends")
        })?;
        // The model it replaces gives its threads back.
        let served = || -> usize {
            (self.models.load().values())
                .filter(|m| m.name != name)
                .map(|m| m.threads())
                .sum()
        };
        let caps = Caps {
            per_version: self.max_model_threads,
            total: &self.threads,
            served: &served,
        };
        // The promise is given back when this returns, after the swap.
        let (model, _promise) = if overrides.files.is_empty() {
            let dir = self.folder()?.join(name);
            if !dir.is_dir() {
                return Err(format!("no model folder '{name}' in the repository"));
            }
            let given = overrides.config.map(|c| (c, "the load request's config"));
            load_model(&dir, name, given, caps)
        } else {
            // As Triton: the files are the whole model folder, so its config comes with them.
            let config = overrides.config.ok_or(
                "file: parameters replace the model folder and need a config parameter with them",
            )?;
            let staged = Staged::new(&self.staging_dir, &self.staged, &overrides.files)
                .map_err(|e| format!("model '{name}': {e}"))?;
            let given = Some((config, "the load request's config"));
            let (mut model, promise) = load_model(staged.dir(), name, given, caps);
            // Every backend has read what it needs into memory by now; the folder goes when
            // `staged` does. No host path leaves in an error.
            model.hide_path(staged.dir(), "<the load request's files>");
            (model, promise)
        };
        // Only the checks and the swap are serialised with other changes.
        let _one_at_a_time = lock(&self.changing);
        check_ensemble(&model, &self.models.load());
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
        self.publish(models);
    }

    /// Serves `models` from now on, its ensembles checked against them first.
    fn publish(&self, models: BTreeMap<String, Arc<ServedModel>>) {
        check_ensembles(&models);
        self.models.store(Arc::new(models));
    }

    /// Stops serving a model; requests already running finish on it. With `dependents`, the
    /// models an ensemble composes go too, except those another ensemble still composes.
    pub fn unload(&self, name: &str, dependents: bool) -> Result<(), Error> {
        let _one_at_a_time = lock(&self.changing);
        let mut models = BTreeMap::clone(&self.models.load());
        let model = models.remove(name).ok_or_else(|| unknown_model(name))?;
        tracing::info!(model = name, "model unloaded");
        if dependents {
            let steps = |m: &ServedModel| -> BTreeSet<String> {
                (m.loaded().filter_map(|(_, l)| l.ensemble.as_ref()))
                    .flat_map(|e| e.steps.iter().map(|s| s.model.clone()))
                    .collect()
            };
            let kept: BTreeSet<String> = models.values().flat_map(|m| steps(m)).collect();
            for step in steps(&model).difference(&kept) {
                if models.remove(step).is_some() {
                    tracing::info!(model = step, "model unloaded with ensemble {name}");
                }
            }
        }
        self.publish(models);
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

/// An entry of a set for as long as this lives: a model that is loading, a staging folder.
struct Claim<'r, T: Ord + Clone> {
    item: T,
    set: &'r Mutex<BTreeSet<T>>,
}

impl<'r, T: Ord + Clone> Claim<'r, T> {
    /// `None` when the set holds `item` already.
    fn new(set: &'r Mutex<BTreeSet<T>>, item: T) -> Option<Claim<'r, T>> {
        // Lazily: a Claim made and dropped here would take out the holder's entry.
        let inserted = lock(set).insert(item.clone());
        inserted.then(|| Claim { item, set })
    }
}

impl<T: Ord + Clone> Drop for Claim<'_, T> {
    fn drop(&mut self) {
        lock(self.set).remove(&self.item);
    }
}

/// A load request's files, written into a private folder of their own (a random name,
/// created exclusively, mode 0700, under the staging dir), which is removed when this is
/// dropped: after the load, whether it succeeded, failed or panicked.
struct Staged<'r>(Claim<'r, PathBuf>);

impl<'r> Staged<'r> {
    /// A path that is not `<version>/<file>` inside the folder is refused.
    fn new(
        under: &Path,
        registry: &'r Mutex<BTreeSet<PathBuf>>,
        files: &[(String, Vec<u8>)],
    ) -> Result<Staged<'r>, String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let mut folder = std::fs::DirBuilder::new();
        folder.mode(0o700);
        let dir = (0..8)
            .map_while(|_| random_hex())
            .map(|name| under.join(format!("tensord-load-{name}")))
            .find(|dir| folder.create(dir).is_ok())
            .ok_or("cannot create a staging folder for the load request's files")?;
        let staged = Staged(Claim::new(registry, dir).ok_or("the staging folder is taken")?);
        for (path, contents) in files {
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
            let target = staged.dir().join(relative);
            let parent = target.parent().unwrap_or(staged.dir());
            folder.recursive(true);
            let written = folder.create(parent).and_then(|()| {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)?
                    .write_all(contents)
            });
            written.map_err(|e| format!("file:{path}: cannot be written: {}", e.kind()))?;
        }
        Ok(staged)
    }
}

impl Staged<'_> {
    fn dir(&self) -> &Path {
        &self.0.item
    }
}

// The folder goes first; then the claim, dropped after, takes it out of the registry.
impl Drop for Staged<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// 128 random bits in hex, from the kernel.
fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the array it is given.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    (n == bytes.len() as isize).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Each file and folder of a model folder (three levels deep, at most 10,000), with its size
/// and modification time: what poll mode compares.
fn fingerprint(dir: &Path) -> Fingerprint {
    const MAX_ENTRIES: usize = 10_000;
    let mut out = Vec::new();
    let mut folders = vec![(dir.to_path_buf(), 0)];
    while let Some((folder, depth)) = folders.pop() {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if out.len() >= MAX_ENTRIES {
                break;
            }
            if meta.is_dir() && depth < 3 {
                folders.push((path.clone(), depth + 1));
            }
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            out.push((relative, meta.len(), meta.modified().ok()));
        }
    }
    out.sort();
    out
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

/// Loads a model at start, its threads counted with those of the models already loaded.
fn load_at_start(
    models: &BTreeMap<String, Arc<ServedModel>>,
    threads: &ThreadTotal,
    options: &Options,
    dir: &Path,
    name: &str,
    config: Option<(ModelConfig, &str)>,
) -> ServedModel {
    let used: usize = models.values().map(|m| m.threads()).sum();
    let served = || used;
    let caps = Caps {
        per_version: options.max_model_threads,
        total: threads,
        served: &served,
    };
    let (model, _promise) = load_model(dir, name, config, caps);
    model
}

/// Reads a model folder: its config (or `config`, a load request's), then each version the
/// policy selects.
/// The model comes with the threads promised to it.
fn load_model<'r>(
    dir: &Path,
    name: &str,
    config: Option<(ModelConfig, &str)>,
    caps: Caps<'r>,
) -> (ServedModel, Option<Promise<'r>>) {
    let source = match &config {
        Some((_, source)) => source.to_string(),
        None => config_file(dir).display().to_string(),
    };
    let config = config.map(|(config, _)| config);
    let mut model = ServedModel {
        name: name.to_string(),
        config: ModelConfig::default(),
        versions: Vec::new(),
        error: None,
        upstream: ArcSwapOption::empty(),
    };
    let config = config
        .map_or_else(|| ModelConfig::load(dir), Ok)
        .and_then(|c| {
            c.validate().map_err(|e| format!("{source}: {e}"))?;
            c.threads_within(caps.per_version)
                .map_err(|e| format!("{source}: {e}"))?;
            Ok(c)
        });
    match config {
        Ok(mut config) => {
            // A built-in named by its folder: its config says which, so that it loads back
            // under another name.
            if config.backend == "builtin" && config.builtin.is_none() {
                config.builtin = Some(name.to_string());
            }
            model.config = config
        }
        Err(e) => {
            tracing::error!(model = name, "model not loaded: {e}");
            model.error = Some(e);
            return (model, None);
        }
    }
    let on_disk = version_folders(dir);
    // A built-in model or an ensemble needs no files: without version folders it serves
    // version 1.
    let fileless = ["builtin", "ensemble"].contains(&model.config.backend.as_str());
    let selected = match (on_disk.is_empty(), fileless) {
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
        return (model, None);
    }
    let needed = model.config.threads().saturating_mul(selected.len());
    let promise = match caps.total.promise(needed, caps.served) {
        Ok(promise) => promise,
        Err(left) => {
            let e = format!(
                "{source}: {needed} threads for {} version(s), but only {left} of the server's {} \
                 (--max-total-model-threads) are left",
                selected.len(),
                caps.total.cap
            );
            tracing::error!(model = name, "model not loaded: {e}");
            model.error = Some(e);
            return (model, None);
        }
    };
    for version in selected {
        let state = match model.config.backend.as_str() {
            "ensemble" => LoadedVersion::ensemble(&model.config, name),
            _ => load_version(name, &model.config, &dir.join(version.to_string()))
                .and_then(|loaded| LoadedVersion::new(loaded, &model.config, name, dir)),
        }
        .map_err(|e| format!("{source}: {e}"));
        match &state {
            Ok(_) => {
                tracing::info!(model = name, version, backend = %model.config.backend, "model loaded")
            }
            Err(e) => tracing::error!(model = name, version, "version not loaded: {e}"),
        }
        model.versions.push(ModelVersion { version, state });
    }
    (model, Some(promise))
}

/// An OVMS pipeline as an ensemble (version 1) whose tensors are those its nodes read and write.
fn pipeline_model(
    pipeline: &OvmsPipeline,
    models: &BTreeMap<String, Arc<ServedModel>>,
) -> ServedModel {
    let mut model = ServedModel {
        name: pipeline.name.clone(),
        config: ModelConfig::default(),
        versions: Vec::new(),
        error: None,
        upstream: ArcSwapOption::empty(),
    };
    match pipeline_config(pipeline, models) {
        Ok(config) => {
            let state = LoadedVersion::ensemble(&config, &pipeline.name);
            model.config = config;
            model.versions.push(ModelVersion { version: 1, state });
        }
        Err(e) => {
            tracing::error!(model = pipeline.name, "pipeline not loaded: {e}");
            model.error = Some(e);
        }
    }
    model
}

/// The ensemble config of `pipeline`: its inputs as the node inputs they feed, its outputs as
/// the node outputs they are (so images sent to it decode as for its first model).
fn pipeline_config(
    pipeline: &OvmsPipeline,
    models: &BTreeMap<String, Arc<ServedModel>>,
) -> Result<ModelConfig, String> {
    let declared = |(name, step, tensor): &(String, usize, String), output: bool| {
        let step = &pipeline.scheduling.step[*step];
        let depends = format!(
            "pipeline '{}' depends on '{}'",
            pipeline.name, step.model_name
        );
        let served = models.get(&step.model_name);
        let version = (step.model_version >= 0).then(|| step.model_version.to_string());
        let (_, loaded) = (served.and_then(|m| m.version(version.as_deref()).ok()))
            .ok_or_else(|| format!("{depends}, which has no such loaded version"))?;
        let specs = if output {
            &loaded.outputs
        } else {
            &loaded.inputs
        };
        let spec = (specs.iter().find(|s| s.name == *tensor)).ok_or_else(|| {
            format!(
                "{depends}, which has no {} '{tensor}'",
                ["input", "output"][usize::from(output)]
            )
        })?;
        let renamed = TensorSpec {
            name: name.clone(),
            ..spec.clone()
        };
        TensorConfig::describing(&renamed)
            .ok_or_else(|| format!("{depends}, whose '{tensor}' has no fixed datatype and rank"))
    };
    Ok(ModelConfig {
        backend: "ensemble".into(),
        input: (pipeline.inputs.iter().map(|i| declared(i, false))).collect::<Result<_, _>>()?,
        output: (pipeline.outputs.iter().map(|o| declared(o, true))).collect::<Result<_, _>>()?,
        ensemble_scheduling: Some(Proto(pipeline.scheduling.clone())),
        ..ModelConfig::default()
    })
}

/// Checks every ensemble in `models` against the models it composes there.
fn check_ensembles(models: &BTreeMap<String, Arc<ServedModel>>) {
    for model in models.values() {
        check_ensemble(model, models);
    }
}

/// Checks each loaded version of an ensemble against the models it composes, as `models` serves
/// them, as Triton's dependency graph does: while one fails, the ensemble is not ready, and
/// says why. Models that are not ensembles pass.
fn check_ensemble(model: &ServedModel, models: &BTreeMap<String, Arc<ServedModel>>) {
    let name = &model.name;
    let composed = |step: &Step| -> Result<&LoadedVersion, String> {
        let depends = format!("ensemble '{name}' depends on '{}'", step.model);
        let served = models.get(&step.model);
        let Some((_, newest)) = served.and_then(|m| m.loaded().next_back()) else {
            let why = served.and_then(|m| m.reason()).map_or(String::new(), |r| {
                format!(" Model '{}' loading failed with error: {r}", step.model)
            });
            return Err(format!("{depends} which has no loaded version.{why}"));
        };
        let Some(wanted) = &step.version else {
            return Ok(newest);
        };
        (served.and_then(|m| m.version(Some(wanted)).ok()))
            .map(|(_, loaded)| loaded)
            .ok_or_else(|| format!("{depends} whose required version {wanted} is not loaded."))
    };
    let gap = model.loaded().find_map(|(_, loaded)| {
        let ensemble = loaded.ensemble.as_ref()?;
        let own = (loaded.inputs.as_slice(), loaded.outputs.as_slice());
        let batch = |step: &Step| {
            models
                .get(&step.model)
                .map_or(0, |m| m.config.max_batch_size)
        };
        (ensemble.check_models(name, model.config.max_batch_size, own, |step| {
            composed(step).map(|loaded| (batch(step), &loaded.inputs[..], &loaded.outputs[..]))
        }))
        .err()
    });
    if let Some(e) = &gap {
        tracing::warn!(model = name, "ensemble not ready: {e}");
    }
    model.upstream.store(gap.map(Arc::new));
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

    fn explicit() -> Options {
        Options {
            control: ModelControl::Explicit,
            load_at_start: vec!["*".into()],
            staging_dir: std::env::temp_dir(),
            max_model_threads: 64,
            max_total_threads: 256,
        }
    }

    fn write(dir: &Path, model: &str, config: &str) {
        std::fs::create_dir_all(dir.join(model)).unwrap();
        std::fs::write(dir.join(model).join("config.toml"), config).unwrap();
    }

    #[test]
    fn loads_at_once_cannot_share_the_last_threads() {
        let dir = std::env::temp_dir().join(format!("tensord-threads-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let options = Options {
            control: ModelControl::Explicit,
            load_at_start: Vec::new(),
            max_total_threads: 10,
            ..explicit()
        };
        let repo = Repository::open(&dir, options).unwrap();
        let names: Vec<String> = (0..16).map(|i| format!("m{i}")).collect();
        for name in &names {
            write(
                &dir,
                name,
                "backend = \"builtin\"\nbuiltin = \"identity\"\ninstance_count = 4\n",
            );
        }
        // Sixteen loads of four threads each start together; only two fit in ten.
        let start = std::sync::Barrier::new(names.len());
        std::thread::scope(|s| {
            for name in &names {
                let (repo, start) = (&repo, &start);
                s.spawn(move || {
                    start.wait();
                    let _ = repo.load(name, Overrides::default());
                });
            }
        });
        let ready = repo.models().iter().filter(|m| m.is_ready()).count();
        assert_eq!(ready, 2);
        let used: usize = repo.models().iter().map(|m| m.threads()).sum();
        assert_eq!(used, 8);
        assert_eq!(*lock(&repo.threads.promised), 0);
        std::fs::remove_dir_all(&dir).unwrap();
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
        let repo = Repository::open(&dir, explicit()).unwrap();

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
        repo.unload("echo", false).unwrap();
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
        let repo = Repository::open(&dir, explicit()).unwrap();
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

    #[test]
    fn a_refused_claim_leaves_the_holder_in_the_set() {
        let set = Mutex::new(BTreeSet::new());
        let first = Claim::new(&set, "m").unwrap();
        assert!(Claim::new(&set, "m").is_none());
        assert!(lock(&set).contains("m"));
        drop(first);
        assert!(lock(&set).is_empty());
    }

    #[test]
    fn staged_files_live_in_a_private_random_folder_removed_after() {
        use std::os::unix::fs::MetadataExt;
        let under = std::env::temp_dir().join(format!("tensord-staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&under);
        std::fs::create_dir_all(&under).unwrap();
        let registry = Mutex::new(BTreeSet::new());
        let files = vec![("1/model.onnx".to_string(), b"graph".to_vec())];
        let first = Staged::new(&under, &registry, &files).unwrap();
        let second = Staged::new(&under, &registry, &files).unwrap();
        let name = first
            .dir()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let random = name.strip_prefix("tensord-load-").unwrap();
        assert!(random.len() == 32 && random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(first.dir(), second.dir());
        assert!(!name.contains(&std::process::id().to_string()));
        assert_eq!(
            std::fs::metadata(first.dir()).unwrap().mode() & 0o777,
            0o700
        );
        let file = first.dir().join("1/model.onnx");
        assert_eq!(std::fs::read(&file).unwrap(), b"graph");
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(lock(&registry).len(), 2);
        let dir = first.dir().to_path_buf();
        drop(first);
        assert!(!dir.exists());
        assert_eq!(lock(&registry).len(), 1);
        // A bad name fails the load, and its folder goes too; the error names no host path.
        let bad = vec![("1/../../x".to_string(), b"x".to_vec())];
        let e = Staged::new(&under, &registry, &bad).err().unwrap();
        assert!(
            e.contains("<version>/<file>") && !e.contains("tensord-load"),
            "{e}"
        );
        drop(second);
        assert_eq!(std::fs::read_dir(&under).unwrap().count(), 0);
        std::fs::remove_dir_all(&under).unwrap();
    }
}
