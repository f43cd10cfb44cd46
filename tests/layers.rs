//! The crate's layering, read from the files under `src/`:
//!
//! - no import circle between top-level modules (a file or folder directly
//!   under `src/`, apart from `lib.rs`, `main.rs` and `bin/`): module A
//!   depends on B when a file of A mentions `crate::B` outside its
//!   `#[cfg(test)] mod` block;
//! - no function longer than 80 lines (from its `fn` line to its closing
//!   brace) anywhere under `src/`, test modules apart.
//!
//! Needs no etcd and no feature. The checker reads code with comments,
//! string literals and character literals blanked out, so that braces and
//! paths inside them do not count. Its own tests, on small examples, are at
//! the end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The longest a function may be, in lines.
const MAX_FN_LINES: usize = 80;

#[test]
fn no_module_imports_itself_through_others() {
    let files = read_src();
    let (graph, evidence) = module_graph(&files);
    let circles = circles(&graph);
    if circles.is_empty() {
        return;
    }
    let mut msg = format!(
        "{} import circle(s) between the top-level modules of src/ \
         (A -> B: a file of A mentions crate::B):\n",
        circles.len()
    );
    for circle in &circles {
        msg.push_str(&format!("  {}\n", circle.join(" -> ")));
    }
    msg.push_str("where each step is first mentioned:\n");
    let steps: BTreeSet<(&String, &String)> = circles
        .iter()
        .flat_map(|c| c.iter().zip(c.iter().skip(1)))
        .collect();
    for (from, to) in steps {
        let at = &evidence[&(from.clone(), to.clone())];
        msg.push_str(&format!("  {from} -> {to}: {at}\n"));
    }
    panic!("{msg}");
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let mut long = Vec::new();
    for (path, text) in read_src() {
        let code = without_test_modules(&code_only(&text));
        for f in functions(&code) {
            if f.lines > MAX_FN_LINES {
                long.push((f.lines, format!("{}:{}", path.display(), f.line), f.name));
            }
        }
    }
    if long.is_empty() {
        return;
    }
    long.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let mut msg = format!(
        "{} function(s) longer than {MAX_FN_LINES} lines:\n",
        long.len()
    );
    for (lines, at, name) in &long {
        msg.push_str(&format!("  {at} {name}: {lines} lines\n"));
    }
    panic!("{msg}");
}

// ---------------------------------------------------------------------------
// Reading src/
// ---------------------------------------------------------------------------

/// Every `.rs` file under `src/`, as (path relative to the crate, text),
/// sorted by path.
fn read_src() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("src")];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}"));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                let rel = path.strip_prefix(root).expect("under the crate").to_owned();
                files.push((rel, text));
            }
        }
    }
    assert!(!files.is_empty(), "no .rs file under {root:?}/src");
    files.sort();
    files
}

/// The top-level module a file belongs to (`src/lock.rs` and
/// `src/lock/x.rs` to `lock`); none for `lib.rs`, `main.rs` and `bin/`.
fn module_of(rel: &Path) -> Option<String> {
    let mut parts = rel.components().map(|c| c.as_os_str().to_string_lossy());
    assert_eq!(parts.next().as_deref(), Some("src"), "{rel:?}");
    let first = parts.next()?;
    let is_file = parts.next().is_none();
    match first.as_ref() {
        "bin" => None,
        "lib.rs" | "main.rs" if is_file => None,
        name if is_file => name.strip_suffix(".rs").map(str::to_owned),
        name => Some(name.to_owned()),
    }
}

/// Module -> the modules it mentions, and for each edge where it is first
/// mentioned (`path:line`).
type Graph = BTreeMap<String, BTreeSet<String>>;

fn module_graph(files: &[(PathBuf, String)]) -> (Graph, BTreeMap<(String, String), String>) {
    let owned: Vec<(String, &PathBuf, &String)> = files
        .iter()
        .filter_map(|(p, t)| module_of(p).map(|m| (m, p, t)))
        .collect();
    let mut graph: Graph = owned
        .iter()
        .map(|(m, ..)| (m.clone(), BTreeSet::new()))
        .collect();
    let mut evidence = BTreeMap::new();
    for (module, path, text) in &owned {
        let code = without_test_modules(&code_only(text));
        for (target, line) in crate_paths(&code) {
            if &target == module || !graph.contains_key(&target) {
                continue;
            }
            graph
                .get_mut(module)
                .expect("a module")
                .insert(target.clone());
            evidence
                .entry((module.clone(), target))
                .or_insert_with(|| format!("{}:{line}", path.display()));
        }
    }
    (graph, evidence)
}

// ---------------------------------------------------------------------------
// Reading code
// ---------------------------------------------------------------------------

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with comments, string literals (plain, byte, raw) and character
/// literals replaced by spaces; newlines are kept, so lines still match.
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < c.len() {
        let end = literal_or_comment_end(&c, i);
        if end > i {
            out.extend(
                c[i..end]
                    .iter()
                    .map(|&ch| if ch == '\n' { '\n' } else { ' ' }),
            );
            i = end;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// If a comment or literal starts at `i`, the index just after it; else `i`.
fn literal_or_comment_end(c: &[char], i: usize) -> usize {
    let at = |k: usize| c.get(k).copied().unwrap_or('\0');
    let after_ident = i > 0 && is_ident(c[i - 1]);
    match (at(i), at(i + 1)) {
        ('/', '/') => (i..c.len()).find(|&k| c[k] == '\n').unwrap_or(c.len()),
        ('/', '*') => block_comment_end(c, i),
        ('"', _) => string_end(c, i + 1),
        ('\'', '\\') => (i + 3..c.len())
            .find(|&k| c[k] == '\'')
            .map_or(c.len(), |k| k + 1),
        ('\'', _) if at(i + 2) == '\'' => i + 3,
        ('r', _) if !after_ident => raw_string_end(c, i + 1).unwrap_or(i),
        ('b' | 'c', 'r') if !after_ident => raw_string_end(c, i + 2).unwrap_or(i),
        _ => i,
    }
}

/// The end of a (nestable) block comment starting at `i`.
fn block_comment_end(c: &[char], i: usize) -> usize {
    let (mut depth, mut k) = (0, i);
    while k + 1 < c.len() {
        if c[k] == '/' && c[k + 1] == '*' {
            depth += 1;
            k += 2;
        } else if c[k] == '*' && c[k + 1] == '/' {
            depth -= 1;
            k += 2;
            if depth == 0 {
                return k;
            }
        } else {
            k += 1;
        }
    }
    c.len()
}

/// The end of a string whose body starts at `k` (after the opening quote).
fn string_end(c: &[char], mut k: usize) -> usize {
    while k < c.len() {
        match c[k] {
            '\\' => k += 2,
            '"' => return k + 1,
            _ => k += 1,
        }
    }
    c.len()
}

/// The end of a raw string whose `#`s (or quote) start at `k`, if one does.
fn raw_string_end(c: &[char], k: usize) -> Option<usize> {
    let hashes = c[k..].iter().take_while(|&&ch| ch == '#').count();
    if c.get(k + hashes) != Some(&'"') {
        return None;
    }
    let mut j = k + hashes + 1;
    while j < c.len() {
        if c[j] == '"'
            && c[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&ch| ch == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(c.len())
}

/// `code` (from [`code_only`]) with every `#[cfg(test)] mod NAME { ... }`
/// blanked out, newlines kept.
fn without_test_modules(code: &str) -> String {
    let mut c: Vec<char> = code.chars().collect();
    let attr: Vec<char> = "#[cfg(test)]".chars().collect();
    let mut i = 0;
    while i + attr.len() <= c.len() {
        if c[i..i + attr.len()] != attr[..] {
            i += 1;
            continue;
        }
        let Some(open) = test_module_body(&c, i + attr.len()) else {
            i += attr.len();
            continue;
        };
        let close = matching_brace(&c, open).unwrap_or(c.len() - 1);
        for ch in &mut c[i..=close] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
        i = close + 1;
    }
    c.into_iter().collect()
}

/// After a `#[cfg(test)]` ending at `k`: the index of the `{` of the inline
/// module it applies to, if it applies to one.
fn test_module_body(c: &[char], k: usize) -> Option<usize> {
    let rest: String = c[k..].iter().take(200).collect();
    let trimmed = rest.trim_start();
    let after_mod = trimmed.strip_prefix("mod")?;
    if !after_mod.starts_with(char::is_whitespace) {
        return None;
    }
    let after_name = after_mod
        .trim_start()
        .trim_start_matches(is_ident)
        .trim_start();
    if !after_name.starts_with('{') {
        return None;
    }
    let offset = rest.chars().count() - after_name.chars().count();
    Some(k + offset)
}

/// The index of the `}` matching the `{` at `open`.
fn matching_brace(c: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &ch) in c.iter().enumerate().skip(open) {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

/// The first path segment after every `crate::` in `code`, with its line;
/// `crate::{a::X, b}` gives `a` and `b`.
fn crate_paths(code: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut line = 1;
    for i in 0..c.len() {
        if c[i] == '\n' {
            line += 1;
        }
        let starts = c[i..].starts_with(&['c', 'r', 'a', 't', 'e', ':', ':']);
        if !starts || (i > 0 && is_ident(c[i - 1])) {
            continue;
        }
        let k = i + "crate::".len();
        if c.get(k) == Some(&'{') {
            let close = matching_brace(&c, k).unwrap_or(c.len());
            found.extend(group_heads(&c[k + 1..close]).into_iter().map(|s| (s, line)));
        } else {
            found.push((ident_at(&c, k), line));
        }
    }
    found.retain(|(s, _)| !s.is_empty());
    found
}

/// The first identifier of each top-level item in a `use` group's body.
fn group_heads(body: &[char]) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    for (k, &ch) in body.iter().enumerate() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            ch if expect_head && depth == 0 && is_ident(ch) => {
                heads.push(ident_at(body, k));
                expect_head = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident_at(c: &[char], k: usize) -> String {
    c[k.min(c.len())..]
        .iter()
        .take_while(|&&ch| is_ident(ch))
        .collect()
}

/// A function found in code: its name, the line of its `fn`, its length.
#[derive(Debug, PartialEq)]
struct Function {
    name: String,
    line: usize,
    lines: usize,
}

/// Every function with a body in `code` (from [`code_only`]), nested ones
/// included, counted from the `fn` line to the line of its closing brace.
fn functions(code: &str) -> Vec<Function> {
    let c: Vec<char> = code.chars().collect();
    let mut line_at = Vec::with_capacity(c.len() + 1);
    let mut line = 1;
    for &ch in &c {
        line_at.push(line);
        if ch == '\n' {
            line += 1;
        }
    }
    line_at.push(line);
    let mut found = Vec::new();
    for i in 0..c.len() {
        let is_fn = c[i..].starts_with(&['f', 'n'])
            && (i == 0 || !is_ident(c[i - 1]))
            && c.get(i + 2).is_some_and(|ch| ch.is_whitespace());
        if !is_fn {
            continue;
        }
        let name_at = (i + 2..c.len())
            .find(|&k| !c[k].is_whitespace())
            .unwrap_or(c.len());
        let name = ident_at(&c, name_at);
        if name.is_empty() {
            continue;
        }
        let Some(open) = body_start(&c, name_at + name.len()) else {
            continue;
        };
        let close = matching_brace(&c, open).unwrap_or(c.len() - 1);
        let lines = line_at[close] - line_at[i] + 1;
        found.push(Function {
            name,
            line: line_at[i],
            lines,
        });
    }
    found
}

/// After a function's name: the `{` of its body, or none for a declaration
/// ending in `;`. Brackets and parentheses of the signature are skipped.
fn body_start(c: &[char], from: usize) -> Option<usize> {
    let mut depth = 0i32;
    for (k, &ch) in c.iter().enumerate().skip(from) {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            '{' if depth == 0 => return Some(k),
            ';' if depth == 0 => return None,
            _ => {}
        }
    }
    None
}

/// Every import circle in `graph`: the strongly connected components with
/// more than one module (Tarjan), and in each the shortest circle through
/// each of its modules, starting at its smallest name.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for component in tarjan(graph) {
        if component.len() < 2 {
            continue;
        }
        for start in &component {
            if let Some(circle) = shortest_circle(graph, &component, start) {
                found.insert(rotate_to_smallest(circle));
            }
        }
    }
    found.into_iter().collect()
}

/// The strongly connected components of `graph` (Tarjan's algorithm).
fn tarjan(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g Graph,
        next: usize,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        components: Vec<BTreeSet<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        for w in s.graph.get(v).into_iter().flatten() {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let low = s.low[v].min(s.low[w.as_str()]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w.as_str()) {
                let low = s.low[v].min(s.index[w.as_str()]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut s = State {
        graph,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.components
}

/// The shortest path from `start` back to itself inside `within` (BFS),
/// written with `start` at both ends.
fn shortest_circle(graph: &Graph, within: &BTreeSet<String>, start: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph.get(v).into_iter().flatten() {
            if !within.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start.to_owned(), v.to_owned()];
                let mut at = v;
                while at != start {
                    at = came_from[at];
                    path.push(at.to_owned());
                }
                path.reverse();
                return Some(path);
            }
            if !came_from.contains_key(w.as_str()) {
                came_from.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

/// `[b, c, a, b]` to `[a, b, c, a]`.
fn rotate_to_smallest(mut circle: Vec<String>) -> Vec<String> {
    circle.pop();
    let first = (0..circle.len())
        .min_by_key(|&k| &circle[k])
        .expect("a circle has modules");
    circle.rotate_left(first);
    circle.push(circle[0].clone());
    circle
}

// ---------------------------------------------------------------------------
// The checker, checked
// ---------------------------------------------------------------------------

fn graph(edges: &[(&str, &str)]) -> Graph {
    let mut g = Graph::new();
    for (a, b) in edges {
        g.entry((*a).to_owned())
            .or_default()
            .insert((*b).to_owned());
        g.entry((*b).to_owned()).or_default();
    }
    g
}

fn spelled(circles: &[Vec<String>]) -> Vec<String> {
    circles.iter().map(|c| c.join(" -> ")).collect()
}

#[test]
fn checker_finds_a_circle_of_three_and_a_pair() {
    let g = graph(&[
        ("lock", "session"),
        ("session", "watch"),
        ("watch", "lock"),
        ("client", "audit"),
        ("audit", "client"),
        ("lock", "types"),
    ]);
    assert_eq!(
        spelled(&circles(&g)),
        [
            "audit -> client -> audit",
            "lock -> session -> watch -> lock"
        ]
    );
}

#[test]
fn checker_finds_no_circle_in_layers() {
    let g = graph(&[
        ("lock", "session"),
        ("lock", "client"),
        ("session", "client"),
        ("client", "types"),
        ("lock", "types"),
    ]);
    assert_eq!(circles(&g), Vec::<Vec<String>>::new());
}

#[test]
fn checker_reads_crate_paths_but_not_comments_strings_or_tests() {
    let src = r##"
use crate::lock::LockGuard;
use crate::{session::Session, types};
// crate::in_comment
/* crate::in_block */
const S: &str = "crate::in_string";
const R: &str = r#"crate::in_raw "string""#;
fn f() -> crate::client::Client { todo!() }
#[cfg(test)]
mod tests {
    use crate::in_tests;
}
"##;
    let paths = crate_paths(&without_test_modules(&code_only(src)));
    let names: Vec<&str> = paths.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["lock", "session", "types", "client"]);
    assert_eq!(paths[3].1, 8, "the line of crate::client");
}

#[test]
fn checker_maps_files_to_top_level_modules() {
    let m = |p: &str| module_of(Path::new(p));
    assert_eq!(m("src/lock.rs").as_deref(), Some("lock"));
    assert_eq!(m("src/lock/queue.rs").as_deref(), Some("lock"));
    assert_eq!(m("src/lib.rs"), None);
    assert_eq!(m("src/main.rs"), None);
    assert_eq!(m("src/bin/locker/main.rs"), None);
}

fn fn_of_lines(name: &str, total: usize) -> String {
    let body: String = (0..total - 2)
        .map(|k| format!("    let _x{k} = {k};\n"))
        .collect();
    format!("fn {name}() {{\n{body}}}\n")
}

#[test]
fn checker_measures_functions_from_fn_to_closing_brace() {
    let src = format!(
        "{}\n/// Doc.\n{}",
        fn_of_lines("long", 81),
        fn_of_lines("just_fits", 80)
    );
    let found = functions(&code_only(&src));
    assert_eq!(
        found,
        [
            Function {
                name: "long".into(),
                line: 1,
                lines: 81
            },
            Function {
                name: "just_fits".into(),
                line: 84,
                lines: 80
            },
        ]
    );
}

#[test]
fn checker_ignores_braces_in_strings_comments_and_chars() {
    let src = r##"
pub(crate) async fn tricky<'a>(x: &'a [u8; 4]) -> &'a str {
    let s = "}}} \" }";
    let r = r#"}"}"#;
    let c = '}';
    let e = '\'';
    let b = b'{';
    // }
    /* } /* nested } */ } */
    'outer: loop { break 'outer; }
    s
}
trait T {
    fn declared(&self);
    fn defaulted(&self) { }
}
#[cfg(test)]
mod tests {
    fn hidden() {}
}
"##;
    let found = functions(&without_test_modules(&code_only(src)));
    let seen: Vec<(&str, usize, usize)> = found
        .iter()
        .map(|f| (f.name.as_str(), f.line, f.lines))
        .collect();
    assert_eq!(seen, [("tricky", 2, 11), ("defaulted", 15, 1)]);
}
