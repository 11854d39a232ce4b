/*
 * popmesh DPDK shim: real (linkable) symbols for the DPDK fast-path functions that DPDK 22.11
 * only ships as `static inline` in its headers, plus the DPDK headers bindgen reads.
 *
 * Every function here is a thin wrapper with the same contract as the DPDK function it names;
 * see the DPDK documentation of that function. Nothing here adds behaviour except
 * popmesh_mbuf_is_exclusive, documented below.
 */
#ifndef POPMESH_DPDK_SHIM_H
#define POPMESH_DPDK_SHIM_H

#include <stdint.h>

#include <rte_bus_vdev.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>
#include <rte_version.h>

/* ethdev fast path */
uint16_t popmesh_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			      uint16_t nb_pkts);
uint16_t popmesh_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			      uint16_t nb_pkts);

/* mbuf allocation and reference counts */
struct rte_mbuf *popmesh_pktmbuf_alloc(struct rte_mempool *mp);
int popmesh_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count);
void popmesh_pktmbuf_free(struct rte_mbuf *m);
uint16_t popmesh_mbuf_refcnt_read(const struct rte_mbuf *m);
uint16_t popmesh_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value);

/*
 * 1 when no other mbuf can see this segment's data buffer: the segment is direct (its data lives
 * in its own buffer, not attached to another mbuf or an external buffer) and its refcnt is 1.
 * The refcnt is loaded with acquire ordering so that a concurrent owner's last reads of the
 * buffer (published by the release half of its refcnt decrement) happen before any write the
 * caller makes after seeing 1.
 */
int popmesh_mbuf_is_exclusive(const struct rte_mbuf *m);

/*
 * The pool that owns the segment's data buffer: the segment's own pool for a direct mbuf, the
 * pool of the mbuf it is attached to for an indirect one, NULL for an external buffer. Pools of
 * indirect mbufs may have no data room, so copies should be allocated from this one.
 */
struct rte_mempool *popmesh_pktmbuf_data_pool(const struct rte_mbuf *m);

/* mbuf data accessors (rte_pktmbuf_mtod and friends are macros or inline functions) */
void *popmesh_pktmbuf_mtod(const struct rte_mbuf *m);
uint16_t popmesh_pktmbuf_data_len(const struct rte_mbuf *m);
uint32_t popmesh_pktmbuf_pkt_len(const struct rte_mbuf *m);
uint16_t popmesh_pktmbuf_nb_segs(const struct rte_mbuf *m);
struct rte_mbuf *popmesh_pktmbuf_next(const struct rte_mbuf *m);
struct rte_mbuf *popmesh_pktmbuf_lastseg(struct rte_mbuf *m);
uint16_t popmesh_pktmbuf_headroom(const struct rte_mbuf *m);
uint16_t popmesh_pktmbuf_tailroom(const struct rte_mbuf *m);
uint16_t popmesh_pktmbuf_port(const struct rte_mbuf *m);
void popmesh_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port);
/* The RSS hash the NIC wrote, and whether it wrote one (RTE_MBUF_F_RX_RSS_HASH). */
uint32_t popmesh_pktmbuf_rss_hash(const struct rte_mbuf *m);
int popmesh_pktmbuf_has_rss_hash(const struct rte_mbuf *m);

/* mbuf data-window edits */
char *popmesh_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len);
char *popmesh_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
char *popmesh_pktmbuf_adj(struct rte_mbuf *m, uint16_t len);
int popmesh_pktmbuf_trim(struct rte_mbuf *m, uint16_t len);
int popmesh_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail);

/* per-thread EAL state (thread-local variables Rust cannot name) */
int popmesh_rte_errno(void);
void popmesh_set_rte_errno(int value);
unsigned int popmesh_lcore_id(void);
unsigned int popmesh_socket_id(void);

/*
 * One symbol of each library that must stay linked (EAL, ethdev, mbuf, mempool, vdev bus). This
 * table lives in the same object as every function above, so any program that calls one of them
 * also keeps these libraries as DT_NEEDED under the linker's --as-needed.
 */
extern const void *const popmesh_dpdk_link_anchors[5];

#endif /* POPMESH_DPDK_SHIM_H */
