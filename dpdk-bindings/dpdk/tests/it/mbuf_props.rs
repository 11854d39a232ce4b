//! Random sequences of data-window edits against a model of the segments' bytes.

use popmesh_dpdk::{Mbuf, Mempool};
use proptest::prelude::*;

use crate::common::{bytes_of, init_eal, pool};

#[derive(Clone, Debug)]
enum Op {
    Prepend(usize),
    Append(usize),
    Adj(usize),
    Trim(usize),
    /// Chain a new segment holding this many bytes.
    Chain(usize),
    /// Take an indirect clone and drop it again (freezes the write limit at 0).
    CloneAndDrop,
    /// Overwrite every byte `as_mut` exposes with this value.
    Write(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..200).prop_map(Op::Prepend),
        (0usize..2200).prop_map(Op::Append),
        (0usize..400).prop_map(Op::Adj),
        (0usize..400).prop_map(Op::Trim),
        (0usize..300).prop_map(Op::Chain),
        Just(Op::CloneAndDrop),
        any::<u8>().prop_map(Op::Write),
    ]
}

/// Applies `op` to `mbuf` and to `model` (the bytes of each segment), checking the outcome
/// against what the model predicts from the mbuf's reported capacities.
fn apply(
    op: &Op,
    mbuf: &mut Mbuf,
    model: &mut Vec<Vec<u8>>,
    pool: &Mempool,
    clones: &Mempool,
    fill: u8,
) {
    match *op {
        Op::Prepend(n) => {
            let fits = n <= mbuf.headroom();
            let exclusive = mbuf.is_exclusive();
            match mbuf.prepend(n) {
                Some(bytes) => {
                    assert!(
                        fits && exclusive,
                        "prepend({n}) succeeded without room or exclusivity"
                    );
                    assert_eq!(bytes.len(), n);
                    bytes.fill(fill);
                    model[0].splice(0..0, std::iter::repeat_n(fill, n));
                }
                None => assert!(!fits || !exclusive, "prepend({n}) refused with room"),
            }
        }
        Op::Append(n) => {
            let fits = n <= mbuf.tailroom();
            match mbuf.append(n) {
                Some(bytes) => {
                    assert!(fits);
                    bytes.fill(fill);
                    model
                        .last_mut()
                        .expect("segments")
                        .extend(std::iter::repeat_n(fill, n));
                }
                None => assert!(
                    !fits || model.len() == 1 && !mbuf.is_exclusive(),
                    "append({n}) refused with room"
                ),
            }
        }
        Op::Adj(n) => {
            let ok = mbuf.adj(n);
            assert_eq!(ok, n <= model[0].len());
            if ok {
                model[0].drain(..n);
            }
        }
        Op::Trim(n) => {
            let last = model.last_mut().expect("segments");
            let ok = mbuf.trim(n);
            assert_eq!(ok, n <= last.len());
            if ok {
                last.truncate(last.len() - n);
            }
        }
        Op::Chain(n) => {
            if let Some(mut tail) = pool.alloc() {
                tail.append(n).expect("fits a fresh segment").fill(fill);
                mbuf.chain(tail).expect("few segments");
                model.push(vec![fill; n]);
            }
        }
        Op::CloneAndDrop => {
            if let Some(clone) = mbuf.clone_indirect(clones) {
                assert_eq!(bytes_of(&clone), model.concat());
                drop(clone);
                assert_eq!(mbuf.writable_len(), 0);
            }
        }
        Op::Write(value) => {
            let writable = mbuf.writable_len();
            assert_eq!(mbuf.as_mut().len(), writable);
            mbuf.as_mut().fill(value);
            model[0][..writable].fill(value);
        }
    }
}

#[test]
fn random_edits_keep_lengths_and_bytes_consistent() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "props", 1023);
    let clones = Mempool::new(&eal, "props-clones", 1023, 0, 0, None).expect("clone pool");
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(ops in proptest::collection::vec(op(), 1..40))| {
        let mut mbuf = pool.alloc().expect("free mbuf");
        let mut model = vec![Vec::new()];
        for (i, op) in ops.iter().enumerate() {
            apply(op, &mut mbuf, &mut model, &pool, &clones, i as u8);
            let segments: Vec<&[u8]> = mbuf.segments().collect();
            prop_assert_eq!(segments.len(), model.len());
            for (segment, expected) in segments.iter().zip(&model) {
                prop_assert_eq!(*segment, &expected[..]);
            }
            prop_assert_eq!(mbuf.len(), model.iter().map(Vec::len).sum::<usize>());
            prop_assert_eq!(mbuf.data_len(), model[0].len());
            prop_assert_eq!(usize::from(mbuf.nb_segs()), model.len());
            prop_assert!(mbuf.writable_len() <= mbuf.data_len());
        }
        drop(mbuf);
        prop_assert_eq!(pool.in_use(), 0);
        prop_assert_eq!(clones.in_use(), 0);
    });
}
