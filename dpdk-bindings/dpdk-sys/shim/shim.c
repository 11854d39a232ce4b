/* Real symbols for DPDK's static inline fast-path functions; see shim.h. */
#include "shim.h"

/* `retain` keeps the table through the linker's --gc-sections, so its references still count. */
__attribute__((used, retain)) const void *const popmesh_dpdk_link_anchors[5] = {
	(const void *)rte_eal_init,
	(const void *)rte_eth_dev_count_avail,
	(const void *)rte_pktmbuf_pool_create,
	(const void *)rte_mempool_free,
	(const void *)rte_vdev_init,
};

uint16_t popmesh_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
			      uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t popmesh_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
			      uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *popmesh_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}

int popmesh_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned int count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void popmesh_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

uint16_t popmesh_mbuf_refcnt_read(const struct rte_mbuf *m)
{
	return rte_mbuf_refcnt_read(m);
}

uint16_t popmesh_mbuf_refcnt_update(struct rte_mbuf *m, int16_t value)
{
	return rte_mbuf_refcnt_update(m, value);
}

int popmesh_mbuf_is_exclusive(const struct rte_mbuf *m)
{
	return RTE_MBUF_DIRECT(m) && __atomic_load_n(&m->refcnt, __ATOMIC_ACQUIRE) == 1;
}

struct rte_mempool *popmesh_pktmbuf_data_pool(const struct rte_mbuf *m)
{
	if (RTE_MBUF_HAS_EXTBUF(m))
		return NULL;
	if (RTE_MBUF_CLONED(m))
		return rte_mbuf_from_indirect((struct rte_mbuf *)m)->pool;
	return m->pool;
}

void *popmesh_pktmbuf_mtod(const struct rte_mbuf *m)
{
	return rte_pktmbuf_mtod(m, void *);
}

uint16_t popmesh_pktmbuf_data_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_data_len(m);
}

uint32_t popmesh_pktmbuf_pkt_len(const struct rte_mbuf *m)
{
	return rte_pktmbuf_pkt_len(m);
}

uint16_t popmesh_pktmbuf_nb_segs(const struct rte_mbuf *m)
{
	return m->nb_segs;
}

struct rte_mbuf *popmesh_pktmbuf_next(const struct rte_mbuf *m)
{
	return m->next;
}

struct rte_mbuf *popmesh_pktmbuf_lastseg(struct rte_mbuf *m)
{
	return rte_pktmbuf_lastseg(m);
}

uint16_t popmesh_pktmbuf_headroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_headroom(m);
}

uint16_t popmesh_pktmbuf_tailroom(const struct rte_mbuf *m)
{
	return rte_pktmbuf_tailroom(m);
}

uint16_t popmesh_pktmbuf_port(const struct rte_mbuf *m)
{
	return m->port;
}

void popmesh_pktmbuf_set_port(struct rte_mbuf *m, uint16_t port)
{
	m->port = port;
}

uint32_t popmesh_pktmbuf_rss_hash(const struct rte_mbuf *m)
{
	return m->hash.rss;
}

int popmesh_pktmbuf_has_rss_hash(const struct rte_mbuf *m)
{
	return (m->ol_flags & RTE_MBUF_F_RX_RSS_HASH) != 0;
}

char *popmesh_pktmbuf_prepend(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_prepend(m, len);
}

char *popmesh_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

char *popmesh_pktmbuf_adj(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_adj(m, len);
}

int popmesh_pktmbuf_trim(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_trim(m, len);
}

int popmesh_pktmbuf_chain(struct rte_mbuf *head, struct rte_mbuf *tail)
{
	return rte_pktmbuf_chain(head, tail);
}

int popmesh_rte_errno(void)
{
	return rte_errno;
}

void popmesh_set_rte_errno(int value)
{
	rte_errno = value;
}

unsigned int popmesh_lcore_id(void)
{
	return rte_lcore_id();
}

unsigned int popmesh_socket_id(void)
{
	return rte_socket_id();
}
