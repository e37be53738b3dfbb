//! The crate's modules depend on each other without cycles: reading `src/`, each top-level
//! module's references to `crate::<module>` outside comments and unit tests form a graph that
//! must be acyclic, so that every module can be read (and tested) knowing only the ones below it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module name → the top-level modules its code refers to.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut pending = vec![src.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str().to_str().unwrap();
        let module = top.trim_end_matches(".rs").to_string();
        if module == "lib" {
            continue; // the root declares and re-exports every module
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests may reach anywhere; they start at the first `#[cfg(test)]`.
        let code = text.split("#[cfg(test)]").next().unwrap();
        let deps = graph.entry(module.clone()).or_default();
        for line in code.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String =
                    line[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != module && name.chars().next().unwrap().is_lowercase() {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

/// A cycle through `at`, if the walk finds one (as the list of modules on it).
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    at: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(start) = path.iter().position(|m| m == at) {
        let mut cycle = path[start..].to_vec();
        cycle.push(at.to_string());
        return Some(cycle);
    }
    if done.contains(at) {
        return None;
    }
    path.push(at.to_string());
    for next in graph.get(at).into_iter().flatten() {
        if let Some(cycle) = find_cycle(graph, next, path, done) {
            return Some(cycle);
        }
    }
    path.pop();
    done.insert(at.to_string());
    None
}

#[test]
fn modules_form_no_cycles() {
    let graph = graph();
    // The reading works: the layers the crate is built from are all there, with their edges.
    assert!(graph.len() >= 15, "{graph:?}");
    assert!(graph["tensor"].contains("storage") && graph["storage"].contains("device"), "{graph:?}");
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, module, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}\nthe graph: {graph:#?}", cycle.join(" -> "));
        }
    }
}
