use popmesh_dpdk::{Mempool, HEADROOM};

use crate::common::{bytes_of, frame, init_eal, mbuf_with, pool};

/// A pool for indirect clones: no data room needed.
fn clone_pool(eal: &popmesh_dpdk::Eal) -> Mempool {
    Mempool::new(eal, "clones", 127, 0, 0, None).expect("clone pool")
}

#[test]
fn fresh_mbuf_grows_both_ways_and_is_writable() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "grow", 63);
    let mut m = pool.alloc().expect("free mbuf");
    assert!(m.is_exclusive());
    m.append(100)
        .expect("tailroom")
        .copy_from_slice(&frame(100, 1));
    assert_eq!(m.as_ref(), &frame(100, 1)[..]);
    assert_eq!(m.writable_len(), 100);
    m.prepend(14).expect("headroom").fill(0xee);
    assert_eq!(m.len(), 114);
    assert_eq!(m.data_len(), 114);
    assert_eq!(m.headroom(), usize::from(HEADROOM) - 14);
    assert_eq!(&m.as_ref()[..14], &[0xee; 14]);
    m.as_mut()[0] = 1;
    assert_eq!(m.as_ref()[0], 1);

    assert!(
        m.prepend(usize::from(HEADROOM)).is_none(),
        "only HEADROOM - 14 left"
    );
    assert!(m.prepend(70_000).is_none(), "beyond u16");
    assert_eq!(m.len(), 114, "failed prepend leaves the mbuf alone");
    let tailroom = m.tailroom();
    assert!(m.append(tailroom + 1).is_none());
    assert_eq!(m.len(), 114);

    assert!(!m.adj(115), "more than the segment holds");
    assert!(m.adj(14));
    assert_eq!(
        m.as_ref(),
        &frame(100, 1)[..],
        "adj dropped exactly the prepended bytes"
    );
    assert!(!m.trim(101));
    assert!(m.trim(40));
    assert_eq!(m.as_ref(), &frame(100, 1)[..60]);
    assert!(m.trim(60));
    assert!(m.is_empty());
    m.set_port(7);
    assert_eq!(m.port(), 7);
    assert_eq!(m.rss_hash(), None, "no NIC computed a hash");
}

#[test]
fn clone_indirect_shares_data_read_only() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "direct", 63);
    let clones = clone_pool(&eal);
    let mut original = mbuf_with(&pool, &frame(200, 2));
    let mut clone = original.clone_indirect(&clones).expect("clone");
    assert_eq!(clones.in_use(), 1);
    assert_eq!(bytes_of(&clone), frame(200, 2));
    assert_eq!(
        clone.as_ref().as_ptr(),
        original.as_ref().as_ptr(),
        "same bytes, not a copy"
    );

    assert!(original.as_mut().is_empty(), "shared data is read-only");
    assert!(clone.as_mut().is_empty());
    assert!(
        original.prepend(4).is_none(),
        "headroom is shared with the clone"
    );
    assert!(clone.prepend(4).is_none());
    assert!(
        original.append(4).is_none(),
        "tailroom is shared with the clone"
    );
    assert!(clone.append(4).is_none());
    // Metadata edits are per mbuf and stay allowed.
    assert!(clone.adj(10));
    assert_eq!(clone.as_ref(), &frame(200, 2)[10..]);
    assert_eq!(original.len(), 200);

    drop(clone);
    assert_eq!(clones.in_use(), 0);
    assert!(original.is_exclusive(), "the last sharer is gone");
    assert!(
        original.as_mut().is_empty(),
        "the frozen limit stays until an exclusive edit"
    );
    original.prepend(2).expect("exclusive again").fill(9);
    assert_eq!(
        original.writable_len(),
        202,
        "an exclusive prepend restores full access"
    );
    drop(original);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn chain_segments_and_full_copy() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "chain", 63);
    let mut head = mbuf_with(&pool, b"hello ");
    let tail = mbuf_with(&pool, b"world");
    head.chain(tail).expect("two segments fit");
    let third = mbuf_with(&pool, b"!");
    head.chain(third).expect("three segments fit");
    assert_eq!(head.nb_segs(), 3);
    assert_eq!(head.len(), 12);
    assert_eq!(head.data_len(), 6);
    assert_eq!(head.as_ref(), b"hello ");
    let segments: Vec<&[u8]> = head.segments().collect();
    assert_eq!(segments, [&b"hello "[..], b"world", b"!"]);
    assert_eq!(bytes_of(&head), b"hello world!");
    assert_eq!(head.writable_len(), 6, "as_mut covers the first segment");

    // append/trim work on the last segment.
    head.append(1)
        .expect("tailroom of last segment")
        .copy_from_slice(b"?");
    assert_eq!(bytes_of(&head), b"hello world!?");
    assert!(head.trim(2));
    assert!(!head.trim(1), "the last segment is empty now");
    assert_eq!(bytes_of(&head), b"hello world");

    let mut copy = head.copy_from(&pool).expect("copy");
    assert_eq!(bytes_of(&copy), b"hello world");
    assert_eq!(
        copy.nb_segs(),
        1,
        "the copy is linear (fits one 2 KB segment)"
    );
    assert!(copy.is_exclusive());
    copy.as_mut().copy_from_slice(b"HELLO WORLD");
    assert_eq!(bytes_of(&head), b"hello world", "the copy is private");
    assert_eq!(pool.in_use(), 4);
    drop((head, copy));
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn header_copy_chained_makes_private_headers_over_shared_payload() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "payload", 63);
    let headers = Mempool::new(&eal, "headers", 63, 0, 256, None).expect("header pool");
    let clones = clone_pool(&eal);
    let packet = frame(300, 3);
    let mut original = mbuf_with(&pool, &packet);

    let mut copies: Vec<_> = (0..3u8)
        .map(|i| {
            let mut copy = original
                .header_copy_chained(42, &headers, &clones)
                .expect("copy");
            assert_eq!(copy.nb_segs(), 2);
            assert_eq!(copy.len(), 300);
            assert_eq!(copy.data_len(), 42);
            assert_eq!(copy.writable_len(), 42, "the header segment is private");
            copy.as_mut()[0] = 100 + i;
            copy
        })
        .collect();
    assert_eq!(
        original.writable_len(),
        42,
        "the clones never read the first 42 bytes"
    );
    original.as_mut()[..42].fill(0);
    assert!(original.prepend(1).is_none(), "the buffer is shared");

    for (i, copy) in copies.iter().enumerate() {
        let bytes = bytes_of(copy);
        assert_eq!(bytes[0], 100 + i as u8, "each copy has its own header");
        assert_eq!(
            &bytes[1..42],
            &packet[1..42],
            "header copied before the original changed"
        );
        assert_eq!(&bytes[42..], &packet[42..], "payload shared and intact");
        assert_eq!(
            copy.segments().nth(1).map(<[u8]>::as_ptr),
            Some(original.as_ref()[42..].as_ptr())
        );
    }
    // A header segment has headroom for encapsulation; the shared tail has no tailroom for us.
    copies[0]
        .prepend(8)
        .expect("private header segment has headroom")
        .fill(0xaa);
    assert_eq!(copies[0].len(), 308);
    assert!(
        copies[0].append(1).is_none(),
        "last segment is a shared clone"
    );

    assert_eq!(headers.in_use(), 3);
    assert_eq!(clones.in_use(), 3);
    drop(copies);
    assert_eq!((headers.in_use(), clones.in_use()), (0, 0));
    assert!(original.is_exclusive());
    drop(original);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn header_copy_chained_across_segments_and_edges() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "segs", 63);
    let headers = Mempool::new(&eal, "headers", 63, 0, 256, None).expect("header pool");
    let clones = clone_pool(&eal);
    let mut original = mbuf_with(&pool, &frame(50, 4));
    original
        .chain(mbuf_with(&pool, &frame(70, 5)))
        .expect("chain");
    let whole = bytes_of(&original);

    // Header = exactly the first segment: the clone's empty first segment is dropped.
    let copy = original
        .header_copy_chained(50, &headers, &clones)
        .expect("copy");
    assert_eq!(
        copy.nb_segs(),
        2,
        "header + second segment, no empty segment between"
    );
    assert_eq!(bytes_of(&copy), whole);
    assert_eq!(
        copy.segments().map(<[u8]>::len).collect::<Vec<_>>(),
        [50, 70]
    );

    // Header shorter than the first segment: header + rest of seg 1 + seg 2.
    let copy2 = original
        .header_copy_chained(20, &headers, &clones)
        .expect("copy");
    assert_eq!(
        copy2.segments().map(<[u8]>::len).collect::<Vec<_>>(),
        [20, 30, 70]
    );
    assert_eq!(bytes_of(&copy2), whole);
    assert_eq!(original.writable_len(), 20, "the tighter of the two limits");

    assert!(
        original
            .header_copy_chained(51, &headers, &clones)
            .is_none(),
        "beyond the first segment"
    );

    // A header that is the whole packet shares nothing.
    let mut small = mbuf_with(&pool, &frame(30, 6));
    let whole_copy = small
        .header_copy_chained(30, &headers, &clones)
        .expect("copy");
    assert_eq!(whole_copy.nb_segs(), 1);
    assert_eq!(bytes_of(&whole_copy), frame(30, 6));
    assert_eq!(small.writable_len(), 30, "nothing was shared");

    // hdr_len 0 is a plain clone.
    let zero = small
        .header_copy_chained(0, &headers, &clones)
        .expect("clone");
    assert_eq!(bytes_of(&zero), frame(30, 6));
    assert_eq!(small.writable_len(), 0);

    drop((copy, copy2, whole_copy, zero, original, small));
    assert_eq!(
        (pool.in_use(), headers.in_use(), clones.in_use()),
        (0, 0, 0)
    );
}

#[test]
fn raw_round_trip_keeps_ownership() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "raw", 63);
    let m = mbuf_with(&pool, b"abc");
    let raw = m.into_raw();
    assert_eq!(pool.in_use(), 1, "into_raw does not free");
    // SAFETY: raw came from into_raw just above and nothing else holds it.
    let back = unsafe { popmesh_dpdk::Mbuf::from_raw(raw) };
    assert_eq!(back.as_ref(), b"abc");
    drop(back);
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn own_pool_copies_come_from_the_data_pool() {
    let eal = init_eal(&[]);
    let pool = pool(&eal, "own", 63);
    let clones = clone_pool(&eal);
    let packet = frame(500, 7);
    let mut original = mbuf_with(&pool, &packet);

    let copy = original.copy_own_pool().expect("copy");
    assert_eq!(bytes_of(&copy), packet);
    assert_eq!(pool.in_use(), 2, "taken from the original's pool");

    let mut fanout = original.header_copy_chained_own_pool(42).expect("copy");
    assert_eq!(bytes_of(&fanout), packet);
    assert_eq!(fanout.nb_segs(), 2);
    assert_eq!(fanout.writable_len(), 42);
    assert_eq!(original.writable_len(), 42);
    assert_eq!(pool.in_use(), 4, "header and clone both from the data pool");

    // A clone's own pool has no data room; copies must come from the pool of the data.
    let mut clone = original.clone_indirect(&clones).expect("clone");
    let from_clone = clone.copy_own_pool().expect("copy of a clone");
    assert_eq!(bytes_of(&from_clone), packet);
    assert_eq!(clones.in_use(), 1, "only the clone itself");
    let chained = clone
        .header_copy_chained_own_pool(10)
        .expect("fan-out of a clone");
    assert_eq!(bytes_of(&chained), packet);
    fanout.as_mut()[0] ^= 0xff;
    assert_eq!(bytes_of(&original), packet, "the fan-out header is private");

    drop((copy, fanout, clone, from_clone, chained, original));
    assert_eq!((pool.in_use(), clones.in_use()), (0, 0));
}
