//! Property tests of the two text parsers that see operator- or kernel-written input.

use popmesh_hw::{CpuSet, KernelCmdline, MAX_CPU_ID};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn cpulist_display_parses_back_to_the_same_set(ids in prop::collection::btree_set(0usize..=MAX_CPU_ID, 0..64)) {
        let set: CpuSet = ids.iter().copied().collect();
        let text = set.to_string();
        prop_assert_eq!(CpuSet::parse(&text).expect("own output parses"), set.clone());
        prop_assert!(!text.contains(",,") && !text.ends_with(','));
        prop_assert_eq!(set.len(), ids.len());
    }

    #[test]
    fn cpulist_ranges_and_strides_mean_what_the_kernel_means(
        items in prop::collection::vec((0usize..200, 0usize..50, prop::option::of((1usize..5, 0usize..5))), 1..6)
    ) {
        let mut expected = std::collections::BTreeSet::new();
        let mut parts = Vec::new();
        for (first, len, stride) in items {
            let last = first + len;
            match stride {
                None if len == 0 => parts.push(first.to_string()),
                None => parts.push(format!("{first}-{last}")),
                Some((used, extra)) => parts.push(format!("{first}-{last}:{used}/{}", used + extra)),
            }
            let (used, group) = stride.map_or((1, 1), |(u, e)| (u, u + e));
            for cpu in first..=last {
                if (cpu - first) % group < used {
                    expected.insert(cpu);
                }
            }
        }
        let text = parts.join(",");
        let parsed = CpuSet::parse(&text).expect("valid list");
        prop_assert_eq!(parsed.iter().collect::<Vec<_>>(), expected.into_iter().collect::<Vec<_>>(), "{}", text);
    }

    #[test]
    fn cpulist_parser_never_panics_and_errors_quote_the_input(text in "[0-9,:/ a-z-]{0,40}") {
        if let Err(e) = CpuSet::parse(&text) {
            prop_assert_eq!(&e.value, &text);
        }
    }

    #[test]
    fn cmdline_words_round_trip(
        params in prop::collection::vec(("[a-z_][a-z0-9_.]{0,12}", prop::option::of("[a-zA-Z0-9,:/= .-]{0,16}")), 0..10)
    ) {
        let line: Vec<String> = params
            .iter()
            .map(|(k, v)| match v {
                Some(v) if v.contains(' ') => format!("{k}=\"{v}\""),
                Some(v) => format!("{k}={v}"),
                None => k.clone(),
            })
            .collect();
        let parsed = KernelCmdline::parse(&format!("  {}  -- init args=1", line.join(" ")));
        let got: Vec<(String, Option<String>)> =
            parsed.params.into_iter().map(|p| (p.key, p.value)).collect();
        prop_assert_eq!(got, params);
    }

    #[test]
    fn cmdline_parser_never_panics(text in "\\PC{0,120}") {
        let line = KernelCmdline::parse(&text);
        let _ = line.isolation(&(0..8).collect());
        prop_assert!(line.params.iter().all(|p| !p.key.contains(char::is_whitespace) || text.contains('"')));
    }
}
