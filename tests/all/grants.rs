//! Directory grants that would hand a plugin the host — `/`, the watch directory, the
//! data directory, the compile cache — refused unless broad grants are allowed.

use std::path::{Path, PathBuf};

use corral::{DirGrant, Host, LoadError, PluginOptions, Registry};
use corral_test_guests as guests;

fn grant(host: impl Into<PathBuf>) -> PluginOptions {
    PluginOptions::default().dir(DirGrant {
        host: host.into(),
        guest: "/data".into(),
        writable: true,
    })
}

fn hello() -> Vec<u8> {
    std::fs::read(guests::HELLO).unwrap()
}

#[track_caller]
fn assert_refused(host: &Host, dir: &Path, covers: &str) {
    let error = host.load("granted", &hello(), grant(dir)).unwrap_err();
    let text = error.to_string();
    match &error {
        LoadError::BroadGrant {
            plugin,
            host,
            covers: c,
        } => {
            assert_eq!((plugin.as_str(), host.as_path()), ("granted", dir), "{text}");
            assert!(c.contains(covers), "{text}");
        }
        other => panic!("expected a refused grant of `{}`, got: {other}", dir.display()),
    }
    assert!(
        text.starts_with(&format!(
            "plugin `granted` may not be granted `{}`: ",
            dir.display()
        )) && text.ends_with("(`--allow-broad-grants`, `HostBuilder::allow_broad_grants`)"),
        "{text}"
    );
}

#[test]
fn grants_of_the_root_the_cache_and_a_protected_directory_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let cache = data.join("cache");
    std::fs::create_dir_all(data.join("plugin-files")).unwrap();
    let host = Host::builder()
        .cache_dir(&cache)
        .protect_dir(&data)
        .build()
        .unwrap();
    assert_refused(&host, Path::new("/"), "every file the host can reach");
    // `..` and a path to the same place by another name are seen through.
    assert_refused(&host, &data.join("plugin-files/../.."), "the host's own data");
    assert_refused(&host, &data, "the host's own data");
    assert_refused(&host, &data.join("plugin-files"), "the host's own data");
    // The cache, before it exists, and inside it.
    assert_refused(&host, &cache, "the compile cache");
    std::os::unix::fs::symlink(&data, root.path().join("link")).unwrap();
    assert_refused(&host, &root.path().join("link"), "the host's own data");

    // A narrow grant beside them is fine.
    let elsewhere = tempfile::tempdir().unwrap();
    host.load("narrow", &hello(), grant(elsewhere.path())).unwrap();
}

#[test]
fn broad_grants_load_when_the_operator_allows_them() {
    let data = tempfile::tempdir().unwrap();
    let host = Host::builder()
        .protect_dir(data.path())
        .allow_broad_grants(true)
        .build()
        .unwrap();
    host.load("broad", &hello(), grant(data.path())).unwrap();
    host.load("root", &hello(), grant("/")).unwrap();
}

#[test]
fn a_sidecar_granting_the_watch_directory_itself_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(guests::HELLO, dir.path().join("selfish.wasm")).unwrap();
    std::fs::write(
        dir.path().join("selfish.toml"),
        "[[permissions.dirs]]\nhost = \".\"\nguest = \"/plugins\"\nwritable = true\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("own")).unwrap();
    std::fs::copy(guests::HELLO, dir.path().join("modest.wasm")).unwrap();
    std::fs::write(
        dir.path().join("modest.toml"),
        "[[permissions.dirs]]\nhost = \"own\"\nguest = \"/own\"\n",
    )
    .unwrap();
    let registry = Registry::new(Host::new().unwrap());
    let _watcher = registry.watch(dir.path()).unwrap();
    let selfish = registry.status("selfish").unwrap();
    assert!(selfish.plugin.is_none());
    let error = selfish.load_error.unwrap();
    assert!(
        error.contains("it covers the watch directory")
            && error.contains("so the plugin could rewrite its own code and sidecar"),
        "{error}"
    );
    // A directory inside the watch directory is the usual place for a plugin's files.
    assert!(registry.status("modest").unwrap().plugin.is_some());
}
