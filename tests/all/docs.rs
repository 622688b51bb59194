//! The manual stays true to the tree: every relative link in the README and under
//! `docs/` points at a file that exists (and, into a Markdown file, at one of its
//! headings), and the sidecar reference's example is a sidecar Corral accepts. No
//! network: links with a scheme (`https:`, `http:`) are not followed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use corral::Sidecar;
use corral_daemon::{DaemonSections, Settings};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// The README and every Markdown file under `docs/`.
fn manual() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks, with their numbers.
fn prose(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut fenced = false;
    text.lines().enumerate().filter_map(move |(i, line)| {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            return None;
        }
        (!fenced).then_some((i + 1, line))
    })
}

/// `line` without its code spans, which may hold `](` that is no link.
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The targets of the inline links and images on `line`: `[text](target)`.
fn targets(line: &str) -> Vec<String> {
    let line = without_code(line);
    line.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &line[at + 2..];
            let end = rest.find(')')?;
            Some(rest[..end].to_owned())
        })
        .collect()
}

/// GitHub's anchor for a heading: lowercase, code marks dropped, punctuation but `-` and
/// `_` dropped, spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(file: &Path) -> HashSet<String> {
    let text = std::fs::read_to_string(file).unwrap();
    prose(&text)
        .filter(|(_, line)| line.starts_with('#'))
        .map(|(_, line)| anchor(line.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_in_the_manual_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in manual() {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in prose(&text) {
            for target in targets(line) {
                let has_scheme = target
                    .split_once(':')
                    .is_some_and(|(scheme, _)| scheme.chars().all(|c| c.is_ascii_alphabetic()));
                if has_scheme {
                    continue;
                }
                checked += 1;
                let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                let shown = format!(
                    "{}:{number}: `{target}`",
                    file.strip_prefix(root()).unwrap().display()
                );
                if !linked.exists() {
                    broken.push(format!("{shown}: no such file"));
                } else if !fragment.is_empty()
                    && linked.extension().is_some_and(|e| e == "md")
                    && !anchors(&linked).contains(fragment)
                {
                    broken.push(format!("{shown}: no heading with the anchor `#{fragment}`"));
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_anchors_follow_githubs_rules() {
    assert_eq!(
        anchor(" The contract: `corral:plugin@0.1.0`"),
        "the-contract-corralplugin010"
    );
    assert_eq!(anchor("Lines in the daemon's log"), "lines-in-the-daemons-log");
    assert_eq!(
        targets("see [a](x.md#b), `[c](no)` and ![d](e.png)"),
        ["x.md#b", "e.png"]
    );
}

#[test]
fn the_sidecar_references_example_is_a_valid_sidecar() {
    let text = std::fs::read_to_string(root().join("docs/sidecar.md")).unwrap();
    let start = text
        .find("```toml\n")
        .expect("docs/sidecar.md has a toml example")
        + 8;
    let example = &text[start..start + text[start..].find("```").unwrap()];
    // The library's sections and the daemon's, as `corral run` reads a sidecar.
    let sidecar = Sidecar::parse_with(example, Some(&DaemonSections))
        .unwrap_or_else(|e| panic!("docs/sidecar.md's example: {e}"));
    assert_eq!(sidecar.preservation_version, 1);
    assert!(sidecar.options.restart.is_some());
    assert_eq!(sidecar.options.dirs.len(), 1);
    let settings = Settings::parse(example).unwrap_or_else(|e| panic!("docs/sidecar.md's example: {e}"));
    assert_eq!(settings.ticker_interval, Some(Duration::from_secs(1)));
    assert!(settings.matcher.is_some());
}
