//! CPU sets and the kernel's cpulist syntax (`0-3,8,10-11`, also `0-15:2/4`).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Serialize, Serializer};

/// Largest CPU id the parser accepts: ids beyond `CPU_SETSIZE` (1024) cannot be pinned with a
/// `cpu_set_t`, and the bound keeps a hostile range like `0-4294967295` from allocating.
pub const MAX_CPU_ID: usize = 8191;

/// A set of CPU ids, ordered. Displays in the kernel's cpulist syntax (`0-3,8`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuSet(BTreeSet<usize>);

/// Why a cpulist could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a CPU list ({reason}); expected e.g. \"0-3,8,10-11\"")]
pub struct CpuListError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CpuSet {
    /// The empty set.
    pub fn new() -> CpuSet {
        CpuSet(BTreeSet::new())
    }

    /// Parses the kernel's cpulist syntax: comma-separated ids and ranges `a-b`, a range may
    /// take a stride `a-b:used/group` (the first `used` CPUs of every `group`), as accepted by
    /// `isolcpus=`, `nohz_full=` and printed by `*_list` files. Blank text (and a lone newline,
    /// as in an empty `isolated` file) is the empty set.
    ///
    /// # Errors
    /// [`CpuListError`] for anything else: a non-number, a reversed range, a zero group, an id
    /// above [`MAX_CPU_ID`].
    pub fn parse(text: &str) -> Result<CpuSet, CpuListError> {
        let trimmed = text.trim();
        let mut set = BTreeSet::new();
        if trimmed.is_empty() {
            return Ok(CpuSet(set));
        }
        let fail = |reason: String| CpuListError {
            value: text.to_string(),
            reason,
        };
        for item in trimmed.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(fail("empty item between commas".to_string()));
            }
            let (range, stride) = match item.split_once(':') {
                Some((range, stride)) => (range, Some(stride)),
                None => (item, None),
            };
            let (first, last) = match range.split_once('-') {
                Some((a, b)) => (parse_id(a).map_err(&fail)?, parse_id(b).map_err(&fail)?),
                None => {
                    if stride.is_some() {
                        return Err(fail(format!("{item:?}: a stride needs a range a-b")));
                    }
                    let id = parse_id(range).map_err(&fail)?;
                    (id, id)
                }
            };
            if first > last {
                return Err(fail(format!("{item:?}: range runs backwards")));
            }
            let (used, group) = match stride {
                None => (1, 1),
                Some(stride) => {
                    let (used, group) = stride
                        .split_once('/')
                        .ok_or_else(|| fail(format!("{item:?}: stride must be used/group")))?;
                    let used = parse_id(used).map_err(&fail)?;
                    let group = parse_id(group).map_err(&fail)?;
                    if used == 0 || group == 0 || used > group {
                        return Err(fail(format!("{item:?}: stride needs 0 < used <= group")));
                    }
                    (used, group)
                }
            };
            for cpu in first..=last {
                if (cpu - first) % group < used {
                    set.insert(cpu);
                }
            }
        }
        Ok(CpuSet(set))
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// Adds `cpu`; returns whether it was new.
    pub fn insert(&mut self, cpu: usize) -> bool {
        self.0.insert(cpu)
    }

    /// Number of CPUs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The CPUs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// CPUs in either set.
    pub fn union(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.union(&other.0).copied().collect())
    }

    /// CPUs of `self` not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// The lowest CPU id.
    pub fn first(&self) -> Option<usize> {
        self.0.first().copied()
    }
}

fn parse_id(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let id: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a CPU id"))?;
    if id > MAX_CPU_ID {
        return Err(format!("CPU id {id} is above {MAX_CPU_ID}"));
    }
    Ok(id)
}

impl FromIterator<usize> for CpuSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

impl fmt::Display for CpuSet {
    /// The shortest cpulist: `0-3,8,10-11`; the empty set prints nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut iter = self.0.iter().copied().peekable();
        let mut first_item = true;
        while let Some(start) = iter.next() {
            let mut end = start;
            while iter.peek() == Some(&(end + 1)) {
                end += 1;
                iter.next();
            }
            if !first_item {
                f.write_str(",")?;
            }
            first_item = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for CpuSet {
    /// As a JSON/TOML array of ids, which tools read more easily than a cpulist string.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[usize]) -> CpuSet {
        ids.iter().copied().collect()
    }

    #[test]
    fn parses_the_forms_the_kernel_writes_and_accepts() {
        assert_eq!(
            CpuSet::parse("0-3,8,10-11\n"),
            Ok(set(&[0, 1, 2, 3, 8, 10, 11]))
        );
        assert_eq!(CpuSet::parse(""), Ok(CpuSet::new()));
        assert_eq!(CpuSet::parse("\n"), Ok(CpuSet::new()));
        assert_eq!(CpuSet::parse("5"), Ok(set(&[5])));
        assert_eq!(CpuSet::parse("0-9:2/5"), Ok(set(&[0, 1, 5, 6])));
        assert_eq!(set(&[0, 1, 2, 3, 8, 10, 11]).to_string(), "0-3,8,10-11");
    }

    #[test]
    fn rejects_malformed_lists_naming_the_item() {
        let err = CpuSet::parse("0-3,x").expect_err("x is not a CPU");
        assert_eq!(err.value, "0-3,x");
        assert!(err.reason.contains("\"x\""), "{err}");
        assert!(CpuSet::parse("3-1")
            .expect_err("backwards")
            .reason
            .contains("backwards"));
        assert!(CpuSet::parse("1,,2").is_err());
        assert!(CpuSet::parse("0-9:0/5").is_err());
        assert!(CpuSet::parse("0-9:6/5").is_err());
        assert!(CpuSet::parse("7:1/2").is_err());
        assert!(CpuSet::parse("0-4294967295")
            .expect_err("too big")
            .reason
            .contains("above"));
    }
}
