//! Where the tool keeps its own Python environment (moto) and downloads (DynamoDB Local): the
//! checkout's `.venv` / `.tools` for a binary built and run inside the checkout, the user's
//! cache directory for an installed one (`cargo install --path cli`), whose build directory
//! is not the user's business and may be gone. `FERRY_VENV` / `FERRY_TOOLS_DIR` still win.

use std::path::{Path, PathBuf};

/// The sandbox's `FERRY_VENV` and `FERRY_TOOLS_DIR` for a binary at `exe` built from `repo`,
/// given the cache directory; `None` where the sandbox's own default (under `repo`) is right.
pub fn tool_dirs(exe: &Path, repo: &Path, cache: Option<&Path>) -> Option<(PathBuf, PathBuf)> {
    if exe.starts_with(repo) {
        return None;
    }
    let base = cache?.join("ferry");
    Some((base.join("venv"), base.join("tools")))
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache` (macOS: `$HOME/Library/Caches`).
pub fn cache_dir(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(x) = var("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x));
    }
    let home = PathBuf::from(var("HOME").filter(|h| !h.is_empty())?);
    Some(if cfg!(target_os = "macos") {
        home.join("Library").join("Caches")
    } else {
        home.join(".cache")
    })
}

/// Points the sandbox at the cache directory when this binary is installed. Call first thing
/// in `main`, before anything reads the environment.
pub fn use_cache_when_installed() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let repo = ferry_sandbox::repo_root();
    let cache = cache_dir(|k| std::env::var(k).ok());
    if let Some((venv, tools)) = tool_dirs(&exe, &repo, cache.as_deref()) {
        if std::env::var_os("FERRY_VENV").is_none() {
            std::env::set_var("FERRY_VENV", venv);
        }
        if std::env::var_os("FERRY_TOOLS_DIR").is_none() {
            std::env::set_var("FERRY_TOOLS_DIR", tools);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_binary_uses_the_cache_not_the_build_directory() {
        let repo = Path::new("/src/ferry");
        let cache = Path::new("/home/u/.cache");
        let built = Path::new("/src/ferry/target/debug/ferry");
        assert_eq!(tool_dirs(built, repo, Some(cache)), None);
        let installed = Path::new("/home/u/.cargo/bin/ferry");
        assert_eq!(
            tool_dirs(installed, repo, Some(cache)),
            Some((cache.join("ferry/venv"), cache.join("ferry/tools")))
        );
        assert_eq!(tool_dirs(installed, repo, None), None);
    }

    #[test]
    fn the_cache_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            cache_dir(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Some(PathBuf::from("/x"))
        );
        assert!(cache_dir(env(&[("HOME", "/h")])).is_some_and(|p| p.starts_with("/h")));
        assert_eq!(cache_dir(env(&[])), None);
    }
}
