//! Process trees from /proc: the descendants of a process, found by parent pid, so that the
//! supervisor can reach every rsession of its session and leave no process behind.

use std::collections::HashMap;

/// One process: pid, parent pid and command name (`comm`, at most 15 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself contain spaces
/// and parentheses, so the fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Option<Proc> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text[open + 1..close].to_owned();
    let mut rest = text[close + 1..].split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some(Proc { pid, ppid, comm })
}

/// Reads every process this user can see.
pub fn all() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// Returns the descendants of `root` (not `root` itself), parents before children.
pub fn descendants(root: i32, procs: &[Proc]) -> Vec<Proc> {
    let mut children: HashMap<i32, Vec<&Proc>> = HashMap::new();
    for proc in procs {
        children.entry(proc.ppid).or_default().push(proc);
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(pid) = queue.pop() {
        for child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push((*child).clone());
            queue.push(child.pid);
        }
    }
    found
}

/// Whether a process with this pid still exists (and is not a zombie of ours).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(text) => {
            let state = text
                .rfind(')')
                .and_then(|i| text[i + 1..].split_whitespace().next());
            state != Some("Z")
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_name() {
        let text = "4242 (rs (x) y) S 17 4242 4242 0 -1 4194560 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Proc {
                pid: 4242,
                ppid: 17,
                comm: "rs (x) y".into()
            })
        );
    }

    #[test]
    fn tree_walk() {
        let procs = vec![
            Proc {
                pid: 10,
                ppid: 1,
                comm: "starter".into(),
            },
            Proc {
                pid: 11,
                ppid: 10,
                comm: "rserver".into(),
            },
            Proc {
                pid: 12,
                ppid: 11,
                comm: "rsession".into(),
            },
            Proc {
                pid: 13,
                ppid: 1,
                comm: "other".into(),
            },
        ];
        let found: Vec<i32> = descendants(10, &procs).iter().map(|p| p.pid).collect();
        assert_eq!(found, vec![11, 12]);
    }

    #[test]
    fn own_process_is_alive() {
        assert!(alive(std::process::id() as i32));
    }
}
