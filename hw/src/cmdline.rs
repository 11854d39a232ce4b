//! The kernel command line (`/proc/cmdline`) and the CPU isolation it asks for.

use serde::Serialize;

use crate::cpuset::{CpuListError, CpuSet};

/// One `key` or `key=value` of the kernel command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Param {
    /// The name as written (`isolcpus`, `default_hugepagesz`).
    pub key: String,
    /// Everything after the first `=`, quotes removed; `None` for a bare flag (`quiet`).
    pub value: Option<String>,
}

/// The kernel's own parameters, in order. Words after a lone `--` belong to init and are not
/// kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelCmdline {
    /// Parameters in the order written; a key given twice appears twice (the kernel uses the
    /// last one, and so does [`KernelCmdline::value`]).
    pub params: Vec<Param>,
}

/// Why the CPU isolation parameters could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kernel command line: {key}={value:?}: {source}")]
pub struct CmdlineError {
    /// `isolcpus`, `nohz_full` or `rcu_nocbs`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What is wrong with its CPU list.
    pub source: CpuListError,
}

impl KernelCmdline {
    /// Splits a command line the way the kernel does: words separated by whitespace, double
    /// quotes group spaces into a word and are removed, a lone `--` ends the kernel's part.
    /// Never fails: an unterminated quote runs to the end of the line, as in the kernel.
    pub fn parse(text: &str) -> KernelCmdline {
        let mut params = Vec::new();
        let mut chars = text.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            if chars.peek().is_none() {
                break;
            }
            let mut word = String::new();
            let mut quoted = false;
            let mut had_quote = false;
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() && !quoted {
                    break;
                }
                chars.next();
                if c == '"' {
                    quoted = !quoted;
                    had_quote = true;
                } else {
                    word.push(c);
                }
            }
            if word == "--" && !had_quote {
                break;
            }
            let param = match word.split_once('=') {
                Some((key, value)) => Param {
                    key: key.to_string(),
                    value: Some(value.to_string()),
                },
                None => Param {
                    key: word,
                    value: None,
                },
            };
            params.push(param);
        }
        KernelCmdline { params }
    }

    /// The value of the last `key=...`, comparing names with `-` and `_` as equal (as the
    /// kernel does). `Some("")` for `key=`, `None` when absent or a bare flag.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| same_key(&p.key, key))
            .and_then(|p| p.value.as_deref())
    }

    /// Whether `key` appears at all, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|p| same_key(&p.key, key))
    }

    /// The CPUs named by `isolcpus=`, `nohz_full=` and `rcu_nocbs=`. `isolcpus` may start with
    /// flags (`nohz`, `domain`, `managed_irq`) before its list; they are returned too. A value of
    /// `all` means every CPU in `possible`.
    ///
    /// # Errors
    /// [`CmdlineError`] naming the parameter when its CPU list does not parse.
    pub fn isolation(&self, possible: &CpuSet) -> Result<CmdlineIsolation, CmdlineError> {
        let list = |key: &str, text: &str| -> Result<CpuSet, CmdlineError> {
            if text.trim() == "all" {
                return Ok(possible.clone());
            }
            CpuSet::parse(text).map_err(|source| CmdlineError {
                key: key.to_string(),
                value: text.to_string(),
                source,
            })
        };
        let mut out = CmdlineIsolation::default();
        if let Some(value) = self.value("isolcpus") {
            let mut rest = value;
            loop {
                let (head, tail) = rest.split_once(',').unwrap_or((rest, ""));
                if head.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && head != "all" {
                    out.isolcpus_flags.push(head.to_string());
                    rest = tail;
                } else {
                    break;
                }
            }
            out.isolcpus = list("isolcpus", rest)?;
        }
        if let Some(value) = self.value("nohz_full") {
            out.nohz_full = list("nohz_full", value)?;
        }
        if let Some(value) = self.value("rcu_nocbs") {
            out.rcu_nocbs = list("rcu_nocbs", value)?;
        } else if self.has("rcu_nocbs") {
            // A bare `rcu_nocbs` offloads every CPU (kernels since 5.17).
            out.rcu_nocbs = possible.clone();
        }
        Ok(out)
    }
}

fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .all(|(x, y)| x == y || (matches!(x, b'-' | b'_') && matches!(y, b'-' | b'_')))
}

/// What the kernel command line asks for in CPU isolation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CmdlineIsolation {
    /// `isolcpus=`: CPUs the scheduler keeps ordinary tasks off.
    pub isolcpus: CpuSet,
    /// Flags before the `isolcpus` list (`nohz`, `domain`, `managed_irq`).
    pub isolcpus_flags: Vec<String>,
    /// `nohz_full=`: CPUs without the periodic tick while one task runs.
    pub nohz_full: CpuSet,
    /// `rcu_nocbs=`: CPUs whose RCU callbacks run elsewhere.
    pub rcu_nocbs: CpuSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_quotes_and_the_init_separator() {
        let line = KernelCmdline::parse(
            "BOOT_IMAGE=/vmlinuz quiet isolcpus=managed_irq,domain,2-5 \
             dyndbg=\"file x.c +p\" nohz-full=2-5 -- init-arg isolcpus=9",
        );
        assert_eq!(line.value("BOOT_IMAGE"), Some("/vmlinuz"));
        assert!(line.has("quiet") && line.value("quiet").is_none());
        assert_eq!(line.value("dyndbg"), Some("file x.c +p"));
        assert_eq!(line.value("nohz_full"), Some("2-5"), "- and _ are the same");
        let iso = line.isolation(&(0..8).collect()).expect("valid");
        assert_eq!(iso.isolcpus.to_string(), "2-5", "after -- belongs to init");
        assert_eq!(iso.isolcpus_flags, vec!["managed_irq", "domain"]);
        assert_eq!(iso.nohz_full.to_string(), "2-5");
        assert!(iso.rcu_nocbs.is_empty());
    }

    #[test]
    fn all_bare_rcu_nocbs_and_bad_lists() {
        let possible: CpuSet = (0..4).collect();
        let iso = KernelCmdline::parse("nohz_full=all rcu_nocbs")
            .isolation(&possible)
            .expect("valid");
        assert_eq!(iso.nohz_full, possible);
        assert_eq!(iso.rcu_nocbs, possible);
        let err = KernelCmdline::parse("isolcpus=2-x")
            .isolation(&possible)
            .expect_err("bad list");
        assert_eq!(err.key, "isolcpus");
        assert!(err.to_string().contains("isolcpus=\"2-x\""), "{err}");
    }
}
