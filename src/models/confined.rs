//! Files a config names stay inside their model's folder. A config may come from a client (the
//! load API), so a name is checked before anything is opened: an absolute path, a `..`, or a
//! symbolic link whose target leaves the folder is refused, with the same words whether or not
//! the target exists (an error must not tell a client which files the host has).

use std::path::{Component, Path, PathBuf};

/// Links followed on the way to one file before giving up (as the kernel's ELOOP).
const MAX_LINKS: usize = 40;

/// `name` (the value of config key `key`), taken from folder `from` (`root` or a folder in it),
/// as a path inside `root`, every link on the way resolved and checked. The file itself need
/// not exist.
pub fn inside(root: &Path, from: &Path, key: &str, name: &str) -> Result<PathBuf, String> {
    let refuse = || {
        format!("key '{key}': '{name}' must name a file inside the model's folder (no absolute path, '..' or link out of it)")
    };
    let relative = Path::new(name);
    let plain = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if name.is_empty() || !plain {
        return Err(refuse());
    }
    let root = root.canonicalize().map_err(|_| refuse())?;
    let from = from.canonicalize().map_err(|_| refuse())?;
    let mut links = 0;
    let resolved = resolve(from, relative, &mut links).ok_or_else(refuse)?;
    if resolved.starts_with(&root) && resolved != root {
        Ok(resolved)
    } else {
        Err(refuse())
    }
}

/// `path` walked from `at` as the kernel would, following each link, except that a missing
/// component ends the walk (the rest is appended as written). `None` on a link loop.
fn resolve(mut at: PathBuf, path: &Path, links: &mut usize) -> Option<PathBuf> {
    let mut parts = path.components();
    while let Some(part) = parts.next() {
        match part {
            Component::RootDir => at = PathBuf::from("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                at.pop();
            }
            Component::Normal(name) => {
                let next = at.join(name);
                match std::fs::symlink_metadata(&next) {
                    Ok(meta) if meta.file_type().is_symlink() => {
                        *links += 1;
                        if *links > MAX_LINKS {
                            return None;
                        }
                        let target = std::fs::read_link(&next).ok()?;
                        at = resolve(at, &target, links)?;
                    }
                    Ok(_) => at = next,
                    Err(_) => {
                        // Nothing exists past here, so no link either: the rest is lexical.
                        at = next;
                        for rest in parts.by_ref() {
                            match rest {
                                Component::ParentDir => {
                                    at.pop();
                                }
                                Component::Normal(n) => at.push(n),
                                _ => {}
                            }
                        }
                    }
                }
            }
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn names_stay_inside_the_folder_whatever_exists() {
        let base = std::env::temp_dir().join(format!("tensord-confined-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let model = base.join("model");
        std::fs::create_dir_all(model.join("1")).unwrap();
        std::fs::write(model.join("labels.txt"), "a\n").unwrap();
        std::fs::write(base.join("secret"), "s\n").unwrap();
        symlink("labels.txt", model.join("inner")).unwrap();
        symlink("../secret", model.join("outer")).unwrap();
        symlink("../missing", model.join("dangling")).unwrap();
        symlink(base.join("secret"), model.join("absolute")).unwrap();
        symlink("1/../../secret", model.join("sneaky")).unwrap();
        symlink("loop", model.join("loop")).unwrap();
        symlink("1", model.join("versions")).unwrap();

        let canonical = model.canonicalize().unwrap();
        assert_eq!(
            inside(&model, &model, "k", "labels.txt").unwrap(),
            canonical.join("labels.txt")
        );
        assert_eq!(
            inside(&model, &model, "k", "inner").unwrap(),
            canonical.join("labels.txt")
        );
        assert_eq!(
            inside(&model, &model, "k", "./1/absent.onnx").unwrap(),
            canonical.join("1/absent.onnx")
        );
        assert_eq!(
            inside(&model, &model, "k", "versions/model.onnx").unwrap(),
            canonical.join("1/model.onnx")
        );
        // From a version folder, a link up to the model's folder stays inside.
        symlink("../labels.txt", model.join("1/shared")).unwrap();
        assert_eq!(
            inside(&model, &model.join("1"), "k", "shared").unwrap(),
            canonical.join("labels.txt")
        );
        let refused = |name: &str| inside(&model, &model, "label_filename", name).unwrap_err();
        let words = refused("outer");
        assert!(words.starts_with("key 'label_filename': 'outer' must name a file inside"));
        // Existing and missing targets read the same, name aside.
        for (a, b) in [
            ("outer", "dangling"),
            ("../secret", "../missing"),
            ("/etc/passwd", "/etc/no-such-file"),
        ] {
            assert_eq!(refused(a).replace(a, "X"), refused(b).replace(b, "X"));
        }
        for name in [
            "absolute",
            "sneaky",
            "loop",
            "",
            ".",
            "1/../labels.txt",
            "/etc/passwd",
        ] {
            assert!(inside(&model, &model, "k", name).is_err(), "{name}");
        }
        std::fs::remove_dir_all(&base).unwrap();
    }
}
