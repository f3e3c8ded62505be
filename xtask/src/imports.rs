//! The import graph of a crate's modules (one node per file, an edge for every `crate::`,
//! `super::` or `self::` path that names another module), and its circles: the tidy test
//! below holds every crate of the workspace to having none.
//!
//! Imports from an ancestor module (a `mod.rs` or the crate root, which re-export what they
//! declare) and from the crate root are not edges: a facade that re-exports its children is
//! not a circle with them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root (`["layers", "conv"]`); the root is empty.
type ModPath = Vec<String>;

/// The module path of `file` below the crate's `src`.
fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).expect("a file below src");
    let mut parts: ModPath = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// `text` without comments, string and character literals, and without its
/// `#[cfg(test)] mod tests` (tests may import anything).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !ident_before(&chars, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= chars.len() {
                    break;
                }
                if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    match out.find("#[cfg(test)]\nmod tests") {
        Some(at) => out[..at].to_string(),
        None => out,
    }
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Every path `code` names from `crate`, `super` or `self`, resolved to a module path (and
/// an item below it), as seen from module `here`. Grouped imports (`a::{b, c::d}`) give one
/// path each.
fn named_paths(code: &str, here: &ModPath) -> Vec<ModPath> {
    let chars: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if ident_before(&chars, i) || !chars[i].is_alphabetic() {
            i += 1;
            continue;
        }
        let (word, end) = ident_at(&chars, i);
        let base = match word.as_str() {
            "crate" => Some(ModPath::new()),
            "self" => Some(here.clone()),
            "super" => Some(here[..here.len().saturating_sub(1)].to_vec()),
            _ => None,
        };
        match base {
            Some(base) if chars.get(end..end + 2) == Some(&[':', ':']) => {
                i = tree(&chars, end + 2, base, &mut paths);
            }
            _ => i = end,
        }
    }
    paths
}

/// The identifier starting at `i` and the index after it.
fn ident_at(chars: &[char], i: usize) -> (String, usize) {
    let mut j = i;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
        j += 1;
    }
    (chars[i..j].iter().collect(), j)
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// Reads a path (or a `{...}` group of them) after `prefix::` starting at `i`; returns the
/// index after it.
fn tree(chars: &[char], i: usize, mut prefix: ModPath, out: &mut Vec<ModPath>) -> usize {
    let mut i = skip_space(chars, i);
    loop {
        match chars.get(i) {
            Some('{') => {
                i += 1;
                loop {
                    i = skip_space(chars, i);
                    match chars.get(i) {
                        Some('}') => return i + 1,
                        Some(',') => i += 1,
                        None => return i,
                        _ => {
                            let before = i;
                            i = tree(chars, i, prefix.clone(), out);
                            i = skip_to_item_end(chars, i);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            Some(c) if c.is_alphabetic() || *c == '_' => {
                let (word, end) = ident_at(chars, i);
                match word.as_str() {
                    "super" => {
                        prefix.pop();
                    }
                    "self" => {}
                    _ => prefix.push(word),
                }
                i = end;
                if chars.get(i..i + 2) == Some(&[':', ':']) {
                    i = skip_space(chars, i + 2);
                    continue;
                }
                out.push(prefix);
                return i;
            }
            _ => {
                // `*`, or the end of a path that stops at `::<` (a turbofish).
                out.push(prefix);
                return i;
            }
        }
    }
}

/// Skips what follows an item of a group (` as Name`) up to its `,` or `}`.
fn skip_to_item_end(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i] != ',' && chars[i] != '}' {
        i += 1;
    }
    i
}

/// The edges of a crate's import graph: for each module, the modules it imports from.
pub(crate) fn import_graph(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeMap<ModPath, &PathBuf> =
        files.iter().map(|f| (module_of(src, f), f)).collect();
    let mut graph = BTreeMap::new();
    for (module, file) in &modules {
        let code = code_only(&std::fs::read_to_string(file).expect("a readable source file"));
        let mut targets = BTreeSet::new();
        for path in named_paths(&code, module) {
            // The longest prefix that is a module of this crate.
            let Some(target) = (0..=path.len())
                .rev()
                .map(|k| path[..k].to_vec())
                .find(|p| modules.contains_key(p))
            else {
                continue;
            };
            let from_ancestor = module.starts_with(&target);
            if !target.is_empty() && !from_ancestor {
                targets.insert(target);
            }
        }
        graph.insert(module.clone(), targets);
    }
    graph
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The circles of `graph`, each as the modules along it (the first repeated at the end).
pub(crate) fn circles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Open,
        Done,
    }
    fn visit(
        graph: &BTreeMap<ModPath, BTreeSet<ModPath>>,
        node: &ModPath,
        state: &mut BTreeMap<ModPath, State>,
        stack: &mut Vec<ModPath>,
        found: &mut Vec<Vec<ModPath>>,
    ) {
        state.insert(node.clone(), State::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(State::Open) => {
                    let at = stack.iter().position(|m| m == next).expect("on the stack");
                    let mut circle = stack[at..].to_vec();
                    circle.push(next.clone());
                    found.push(circle);
                }
                Some(State::Done) => {}
                None => visit(graph, next, state, stack, found),
            }
        }
        stack.pop();
        state.insert(node.clone(), State::Done);
    }
    let mut state = BTreeMap::new();
    let mut found = Vec::new();
    for node in graph.keys() {
        if !state.contains_key(node) {
            visit(graph, node, &mut state, &mut Vec::new(), &mut found);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(circle: &[ModPath]) -> String {
        circle
            .iter()
            .map(|m| {
                if m.is_empty() {
                    "crate".into()
                } else {
                    m.join("::")
                }
            })
            .collect::<Vec<_>>()
            .join(" → ")
    }

    #[test]
    fn paths_are_read_through_groups_and_relative_prefixes() {
        let here: ModPath = vec!["layers".into(), "conv".into()];
        let code = code_only(
            "use super::{common::*, pool::{Window, Pads as P}};\n\
             use crate::onnx::node::bad; // crate::model::Ignored\n\
             let s = \"crate::plain::Ignored\"; let c = '\"'; self::helper();\n",
        );
        let got: Vec<String> = named_paths(&code, &here)
            .iter()
            .map(|p| p.join("::"))
            .collect();
        assert_eq!(
            got,
            [
                "layers::common",
                "layers::pool::Window",
                "layers::pool::Pads",
                "onnx::node::bad",
                "layers::conv::helper",
            ]
        );
    }

    #[test]
    fn a_circle_is_found() {
        let graph: BTreeMap<ModPath, BTreeSet<ModPath>> = [
            (vec!["jobs".into()], [vec!["manifest".into()]].into()),
            (vec!["manifest".into()], [vec!["jobs".into()]].into()),
            (vec!["roles".into()], BTreeSet::new()),
        ]
        .into();
        assert_eq!(
            circles(&graph).iter().map(|c| names(c)).collect::<Vec<_>>(),
            ["jobs → manifest → jobs"]
        );
    }

    /// No two modules of a crate import each other, directly or around a circle: each
    /// module reads on its own, below what it uses.
    #[test]
    fn no_crate_has_an_import_circle() {
        let root = crate::project_root();
        let mut sources: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
            .unwrap()
            .map(|e| e.unwrap().path().join("src"))
            .filter(|p| p.is_dir())
            .collect();
        sources.push(root.join("xtask/src"));
        sources.push(root.join("benches/src"));
        sources.sort();
        let mut found = Vec::new();
        for src in &sources {
            for circle in circles(&import_graph(src)) {
                found.push(format!("{}: {}", src.display(), names(&circle)));
            }
        }
        assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
    }
}
