// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Plexus eBPF flow datapath: a tc classifier (clsact ingress, direct
 * action) that runs an OpenFlow-style flow table held in BPF maps.
 *
 * Tuple-space search: every flow of a (port, table) belongs to the subtable
 * of its mask; a subtable is one hash lookup of the packet key ANDed with
 * the mask. Subtables are tried in order of the highest priority they hold,
 * and the search stops once no later subtable can beat the best match.
 *
 * Two generations of the table live in the maps. px_active holds the
 * epoch, the number of flips so far; its parity is the generation packets
 * use, so one load decides both the generation and the microflow cache's
 * epoch. User space writes the other generation, flips px_active with one
 * map update, waits out an RCU grace period (every packet that read the old
 * epoch has left the classifier: it runs under RCU), and only then deletes
 * the old generation: a packet sees the old table or the new one, never a
 * mix, and flows in both keep their counter slot.
 *
 * Verifier budget: the 6.1 verifier walks every path of one function up to
 * a million instructions. Parsing, the subtable search and the actions are
 * global functions, each verified once on its own whatever calls it, and
 * the per-packet loop over tables only calls them.
 *
 * The layouts below are mirrored by dpu-offload/src/ebpf.rs (a test checks
 * the sizes against this object's BTF). Multi-byte packet fields stay in
 * network order; ifindex, table, tci and the action arguments are host order.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PX_MAX_FLOWS 65536 /* flows per generation */
#define PX_MAX_TABLES 4096 /* (port, table) pairs per generation */
#define PX_MASK_SLOTS 1024 /* distinct masks per generation */
#define PX_MAX_MASKS 32    /* subtables per (port, table) */
#define PX_MAX_ACTIONS 16
#define PX_MAX_STAGES 8    /* tables one packet visits */
#define PX_KEY_WORDS 9     /* sizeof(struct px_key) / 8 */

/* Datapath counters after the per-flow slots. */
#define PX_SLOT_MISS PX_MAX_FLOWS
#define PX_SLOT_ERROR (PX_MAX_FLOWS + 1) /* failed actions (a failed copy only loses the copy) */
#define PX_SLOT_CACHE_MISS (PX_MAX_FLOWS + 2) /* lookups that searched; packets only */
#define PX_STATS (PX_MAX_FLOWS + 3)

#define PX_PCP_NONE 0xff
#define PX_TCI_PRESENT 0x1000 /* the CFI/DEI bit, as OVS uses it: "tagged" */

enum px_act_kind {
	PX_ACT_MIRROR = 1,   /* bpf_clone_redirect to egress of arg */
	PX_ACT_REDIRECT = 2, /* bpf_redirect to egress of arg; last action */
	PX_ACT_DROP = 3,
	PX_ACT_GOTO = 4, /* continue in table arg */
	PX_ACT_VLAN_POP = 5,
	PX_ACT_VLAN_PUSH = 6,   /* tpid, vid, pcp */
	PX_ACT_VLAN_MODIFY = 7, /* vid, pcp (tc's vlan modify) */
	PX_ACT_SET_DST = 8,     /* mac */
	PX_ACT_SET_SRC = 9,     /* mac */
};

struct px_key {
	__u32 ifindex;
	__u32 table;
	__u8 dl_dst[6];
	__u8 dl_src[6];
	__be16 tpid;  /* outer tag's TPID, 0 when untagged */
	__u16 tci;    /* vid | pcp << 13 | PX_TCI_PRESENT, 0 when untagged */
	__be16 eth_type;
	__u8 nw_proto; /* IP protocol, or the ARP opcode's low byte */
	__u8 nw_tos;
	__u8 nw_ttl;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 pad0;
	__u8 nw_src[16]; /* IPv4 and ARP in the first four bytes */
	__u8 nw_dst[16];
	__be16 tp_src;
	__be16 tp_dst;
	__be16 tcp_flags; /* the 12 flag bits of TCP's offset/flags word */
	__u16 pad1;
};

struct px_lookup {
	__u32 mask_id; /* generation * PX_MASK_SLOTS + mask */
	__u32 pad;
	struct px_key key; /* already masked */
};

struct px_action {
	__u8 kind;
	__u8 pcp; /* PX_PCP_NONE: keep (modify) or 0 (push) */
	__be16 tpid;
	__u16 vid;
	__u8 mac[6];
	__u32 arg; /* ifindex or table */
};

struct px_flow {
	__u32 slot; /* index into px_stats */
	__u16 priority;
	__u8 n_actions;
	__u8 pad;
	__u64 cookie;
	struct px_action act[PX_MAX_ACTIONS];
};

struct px_table_key {
	__u32 gen;
	__u32 ifindex;
	__u32 table;
};

struct px_table {
	__u32 n_masks;
	__u32 pad;
	__u32 mask_id[PX_MAX_MASKS];  /* by max_prio, highest first */
	__u32 max_prio[PX_MAX_MASKS]; /* highest priority in that subtable */
};

struct px_counter {
	__u64 packets;
	__u64 bytes; /* frame bytes as on the wire, tag included, no FCS */
};

/* dpu-offload/src/ebpf.rs asserts the same. */
_Static_assert(sizeof(struct px_key) == 72, "px_key");
_Static_assert(__builtin_offsetof(struct px_key, tpid) == 20, "px_key.tpid");
_Static_assert(__builtin_offsetof(struct px_key, eth_type) == 24, "px_key.eth_type");
_Static_assert(__builtin_offsetof(struct px_key, nw_src) == 32, "px_key.nw_src");
_Static_assert(__builtin_offsetof(struct px_key, tp_src) == 64, "px_key.tp_src");
_Static_assert(sizeof(struct px_lookup) == 80, "px_lookup");
_Static_assert(sizeof(struct px_action) == 16, "px_action");
_Static_assert(sizeof(struct px_flow) == 16 + 16 * PX_MAX_ACTIONS, "px_flow");
_Static_assert(sizeof(struct px_table_key) == 12, "px_table_key");
_Static_assert(sizeof(struct px_table) == 8 + 8 * PX_MAX_MASKS, "px_table");
_Static_assert(sizeof(struct px_counter) == 16, "px_counter");

/* The epoch: a number that grows with every flip, so that a cached lookup
 * never outlives its table; epoch & 1 is the generation packets use. gen
 * is epoch & 1 too, for user space and older builds; packets read only
 * the epoch. */
struct px_active {
	__u32 gen;
	__u32 epoch;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct px_active);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_active SEC(".maps");

/* Microflow cache, direct-mapped (OVS-DPDK's exact-match cache): a packet
 * key (unmasked) and the epoch pick a slot by a multiplicative hash; the
 * slot holds that key and the subtable whose flow matched it, or
 * PX_CACHE_MISS. A hit is one inlined array access and nine compares in
 * place of the search over every subtable; the flow itself is still read
 * from px_flows. Per CPU, so no two CPUs share a slot, and per program,
 * not pinned: it goes with it. A key that collides with another evicts it. */
#define PX_CACHE_MISS 0xffffffff
#define PX_CACHE_BITS 12
struct px_cache_slot {
	__u32 live;
	__u32 epoch;
	__u32 mask_id;
	__u32 pad;
	struct px_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1 << PX_CACHE_BITS);
	__type(key, __u32);
	__type(value, struct px_cache_slot);
} px_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * PX_MAX_TABLES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct px_table_key);
	__type(value, struct px_table);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_tables SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * PX_MASK_SLOTS);
	__type(key, __u32);
	__type(value, struct px_key);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_masks SEC(".maps");

/* Per subtable, a one-hash Bloom filter of its flows' masked keys: a probe
 * whose bit is clear skips the hash map. Most probes of a search miss
 * (a packet hitting the k-th subtable misses k-1 first), and each miss in
 * px_flows is a cache miss on its bucket; the filters of one (port, table)
 * fit in L2. Written with the subtable's mask, before the flip; a slot
 * written by an older build (valid == 0) is probed without the filter. */
#define PX_BLOOM_BITS 13
#define PX_BLOOM_WORDS (1 << (PX_BLOOM_BITS - 6))
struct px_bloom {
	__u64 valid;
	__u64 bits[PX_BLOOM_WORDS];
};
_Static_assert(sizeof(struct px_bloom) == 8 + 1024, "px_bloom");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * PX_MASK_SLOTS);
	__type(key, __u32);
	__type(value, struct px_bloom);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_bloom SEC(".maps");

/* Not preallocated: memory follows the table, and an element a packet still
 * reads after user space deleted it is freed only after RCU. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2 * PX_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct px_lookup);
	__type(value, struct px_flow);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PX_STATS);
	__type(key, __u32);
	__type(value, struct px_counter);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_stats SEC(".maps");

/* Ports the classifier is attached to (ifindex -> PX_PORT_*), for user
 * space only: what to detach, and whether Plexus created the port's clsact
 * (then it may remove it). */
#define PX_PORT_CREATED_CLSACT 1
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PX_MAX_TABLES);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} px_ports SEC(".maps");

static __always_inline void count(__u32 slot, __u64 bytes)
{
	struct px_counter *c = bpf_map_lookup_elem(&px_stats, &slot);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline __u64 wire_len(struct __sk_buff *skb)
{
	return skb->len + (skb->vlan_present ? 4 : 0);
}

#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define IPPROTO_SCTP 132
#define IPPROTO_HOPOPTS 0
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_DSTOPTS 60

/* The Ethernet header is read straight from the packet (the first
 * PX_PARSE_LEN bytes are made linear first when they are not); what
 * follows with bpf_skb_load_bytes, which reads wherever it is, as the
 * dissector's skb_header_pointer does. */
#define PX_PARSE_LEN 128
/* The flow dissector's MAX_FLOW_DISSECT_HDRS: its budget of headers. */
#define PX_MAX_HDRS 15

/* The transport fields at offset off, into k, read as the dissector reads
 * them: ports from the first 4 bytes, TCP flags only from a whole TCP
 * header (20 bytes, data offset at least 5), ICMP type and code from a
 * whole ICMP header (8 bytes); ports only when ports_only. */
static __always_inline void parse_l4(struct __sk_buff *skb, __u32 off, __u8 proto, int v6,
				     int ports_only, struct px_key *k)
{
	__u8 l4[20];

	if (proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP) {
		int whole = proto == IPPROTO_TCP && !ports_only &&
			    bpf_skb_load_bytes(skb, off, l4, 20) == 0;

		if (!whole && bpf_skb_load_bytes(skb, off, l4, 4) < 0)
			return;
		__builtin_memcpy(&k->tp_src, l4, 2);
		__builtin_memcpy(&k->tp_dst, l4 + 2, 2);
		if (whole && (l4[12] >> 4) >= 5)
			k->tcp_flags = bpf_htons(((l4[12] & 0x0f) << 8) | l4[13]);
	} else if (!ports_only &&
		   ((!v6 && proto == IPPROTO_ICMP) || (v6 && proto == IPPROTO_ICMPV6))) {
		if (bpf_skb_load_bytes(skb, off, l4, 8) < 0)
			return;
		k->icmp_type = l4[0];
		k->icmp_code = l4[1];
	}
}

/* The key of the packet as it is now: what flower's dissector (called
 * without FLOW_DISSECTOR_F_PARSE_1ST_FRAG) would see:
 * - the outer tag is the skb's and eth_type is the EtherType right behind
 *   it, as flower matches vlan_ethtype (measured on 6.1 and 6.12): a
 *   second tag in the frame is not looked through, so its TPID is the
 *   EtherType and the packet has no L3 fields;
 * - an IPv4 header shorter than 20 bytes gives no L3 fields;
 * - fragments, first ones included, give the protocol but no L4 fields;
 * - IPv6 hop-by-hop, routing and destination options headers are walked,
 *   a fragment header ends the walk;
 * - transport fields as parse_l4 reads them;
 * - ARP gives its fields for Ethernet/IPv4 requests and replies only;
 * - the dissector's budget of PX_MAX_HDRS headers: each tag and each
 *   extension header takes one; past it, the walk stops where it is (the
 *   header that went over the budget still gives the ports behind it).
 * Global: verified once. Returns 0. */
__attribute__((noinline)) int px_parse(struct __sk_buff *skb, struct px_key *k)
{
	__u8 *data, *end;
	__u32 off = ETH_HLEN, hdrs = 0;
	__u8 l3[40];
	__u8 proto;
	int i;

	if (!k)
		return 0;
	__builtin_memset(&k->dl_dst, 0, sizeof(*k) - 8);
	if (skb->vlan_present) {
		k->tpid = (__be16)skb->vlan_proto;
		k->tci = (skb->vlan_tci & ~PX_TCI_PRESENT) | PX_TCI_PRESENT;
		hdrs = 1;
	}
	if (skb->data_end - skb->data < PX_PARSE_LEN && skb->len > skb->data_end - skb->data)
		bpf_skb_pull_data(skb, skb->len < PX_PARSE_LEN ? skb->len : PX_PARSE_LEN);
	data = (__u8 *)(long)skb->data;
	end = (__u8 *)(long)skb->data_end;
	if (data + ETH_HLEN > end)
		return 0;
	__builtin_memcpy(k->dl_dst, data, 6);
	__builtin_memcpy(k->dl_src, data + 6, 6);
	__builtin_memcpy(&k->eth_type, data + 12, 2);

	if (k->eth_type == bpf_htons(ETH_P_IP)) {
		__u32 ihl;

		if (bpf_skb_load_bytes(skb, off, l3, 20) < 0)
			return 0;
		ihl = (l3[0] & 0x0f) * 4;
		if (ihl < 20)
			return 0;
		k->nw_tos = l3[1];
		k->nw_ttl = l3[8];
		k->nw_proto = proto = l3[9];
		__builtin_memcpy(k->nw_src, l3 + 12, 4);
		__builtin_memcpy(k->nw_dst, l3 + 16, 4);
		/* MF or an offset: a fragment. */
		if ((l3[6] & 0x3f) | l3[7])
			return 0;
		parse_l4(skb, off + ihl, proto, 0, 0, k);
	} else if (k->eth_type == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, off, l3, 40) < 0)
			return 0;
		k->nw_tos = (l3[0] << 4) | (l3[1] >> 4);
		k->nw_ttl = l3[7];
		__builtin_memcpy(k->nw_src, l3 + 8, 16);
		__builtin_memcpy(k->nw_dst, l3 + 24, 16);
		proto = l3[6];
		off += 40;
		for (i = 0; i < PX_MAX_HDRS + 1; i++) {
			__u8 h[2];

			if (proto != IPPROTO_HOPOPTS && proto != IPPROTO_ROUTING &&
			    proto != IPPROTO_DSTOPTS && proto != IPPROTO_FRAGMENT)
				break;
			if (bpf_skb_load_bytes(skb, off, h, 2) < 0) {
				k->nw_proto = proto;
				return 0;
			}
			if (proto == IPPROTO_FRAGMENT) {
				/* Any fragment: the protocol, no L4. */
				k->nw_proto = h[0];
				return 0;
			}
			proto = h[0];
			off += ((__u32)h[1] + 1) * 8;
			if (++hdrs > PX_MAX_HDRS) {
				k->nw_proto = proto;
				parse_l4(skb, off, proto, 1, 1, k);
				return 0;
			}
		}
		k->nw_proto = proto;
		parse_l4(skb, off, proto, 1, 0, k);
	} else if (k->eth_type == bpf_htons(ETH_P_ARP)) {
		if (bpf_skb_load_bytes(skb, off, l3, 28) < 0)
			return 0;
		if (l3[0] != 0 || l3[1] != 1 || l3[2] != 0x08 || l3[3] != 0 ||
		    l3[4] != 6 || l3[5] != 4 || l3[6] != 0 || (l3[7] != 1 && l3[7] != 2))
			return 0;
		k->nw_proto = l3[7];
		__builtin_memcpy(k->nw_src, l3 + 14, 4);
		__builtin_memcpy(k->nw_dst, l3 + 24, 4);
	}
	return 0;
}

/* The flow of subtable id for key, or NULL. */
static __always_inline struct px_flow *probe_mask(__u32 id, const struct px_key *key,
						 struct px_lookup *probe)
{
	const __u64 *src = (const __u64 *)key;
	__u64 *dst = (__u64 *)&probe->key;
	__u64 *m = bpf_map_lookup_elem(&px_masks, &id);
	struct px_bloom *b = bpf_map_lookup_elem(&px_bloom, &id);
	__u64 h = 0;
	__u32 bit;
	int w;

	if (!m || !b)
		return NULL;
	probe->mask_id = id;
#pragma clang loop unroll(full)
	for (w = 0; w < PX_KEY_WORDS; w++) {
		dst[w] = src[w] & m[w];
		h = (h ^ dst[w]) * 0x9e3779b97f4a7c15ULL;
	}
	bit = h >> (64 - PX_BLOOM_BITS);
	if (b->valid && !(b->bits[(bit >> 6) & (PX_BLOOM_WORDS - 1)] & (1ULL << (bit & 63))))
		return NULL;
	return bpf_map_lookup_elem(&px_flows, probe);
}

/* The subtable holding the best flow of key's (port, table) in generation
 * gen, or PX_CACHE_MISS. Subtables of another generation are never
 * searched. Global: verified once. */
__attribute__((noinline)) int px_search(const struct px_key *key, __u32 gen)
{
	struct px_lookup probe = {};
	struct px_table_key tk = {};
	struct px_table *t;
	__u32 best = PX_CACHE_MISS, best_prio = 0;
	__u32 i;

	if (!key)
		return PX_CACHE_MISS;
	tk.gen = gen;
	tk.ifindex = key->ifindex;
	tk.table = key->table;
	t = bpf_map_lookup_elem(&px_tables, &tk);
	if (!t)
		return PX_CACHE_MISS;
	for (i = 0; i < PX_MAX_MASKS; i++) {
		struct px_flow *f;
		__u32 id;

		if (i >= t->n_masks)
			break;
		if (best != PX_CACHE_MISS && best_prio >= t->max_prio[i])
			break;
		id = t->mask_id[i];
		if (id / PX_MASK_SLOTS != gen)
			break;
		f = probe_mask(id, key, &probe);
		if (f && (best == PX_CACHE_MISS || f->priority > best_prio)) {
			best = id;
			best_prio = f->priority;
		}
	}
	return best;
}

/* The cache slot of key in epoch. */
static __always_inline __u32 cache_index(const __u64 *w, __u32 epoch)
{
	__u64 h = epoch;
	int i;

#pragma clang loop unroll(full)
	for (i = 0; i < PX_KEY_WORDS; i++)
		h = (h ^ w[i]) * 0x9e3779b97f4a7c15ULL;
	return h >> (64 - PX_CACHE_BITS);
}

/* The flow for key: from the microflow cache when the packet's microflow
 * was seen in this epoch, else by the search (whose answer is cached). A
 * slot answers only for its epoch, and the generation is the epoch's
 * parity, so a cached subtable is always of the generation searched. */
static __always_inline struct px_flow *lookup(__u32 epoch, struct px_lookup *lk,
					      struct px_lookup *probe)
{
	const __u64 *src = (const __u64 *)&lk->key;
	__u32 idx = cache_index(src, epoch), mask_id = PX_CACHE_MISS;
	struct px_cache_slot *c = bpf_map_lookup_elem(&px_cache, &idx);
	int hit = 0;

	if (!c)
		return NULL;
	if (c->live && c->epoch == epoch) {
		const __u64 *ck = (const __u64 *)&c->key;
		__u64 diff = 0;
		int w;

#pragma clang loop unroll(full)
		for (w = 0; w < PX_KEY_WORDS; w++)
			diff |= ck[w] ^ src[w];
		if (!diff) {
			mask_id = c->mask_id;
			hit = 1;
		}
	}
	if (!hit) {
		count(PX_SLOT_CACHE_MISS, 0);
		mask_id = (__u32)px_search(&lk->key, epoch & 1);
		c->live = 1;
		c->epoch = epoch;
		c->mask_id = mask_id;
		__builtin_memcpy(&c->key, &lk->key, sizeof(c->key));
	}
	if (mask_id == PX_CACHE_MISS)
		return NULL;
	return probe_mask(mask_id, &lk->key, probe);
}

/* What the actions of one flow decided. */
struct px_result {
	__u32 next;  /* table to continue in (PX_RES_GOTO) */
	__u32 dirty; /* the packet changed: parse it again */
};

#define PX_RES_GOTO (-1)

/* Runs the actions of f: returns the tc verdict, or PX_RES_GOTO with the
 * next table in r. A failed copy (mirror) loses the copy and the packet
 * goes on, as with act_mirred; any other failed action drops it. Both
 * count in PX_SLOT_ERROR. Global: verified once. */
__attribute__((noinline)) int px_act(struct __sk_buff *skb, const struct px_flow *f,
				     struct px_result *r)
{
	__u32 a;

	if (!f || !r)
		return TC_ACT_SHOT;
	r->dirty = 0;
	for (a = 0; a < PX_MAX_ACTIONS; a++) {
		const struct px_action *act;
		__u16 tci;

		if (a >= f->n_actions)
			break;
		act = &f->act[a];
		switch (act->kind) {
		case PX_ACT_MIRROR:
			if (bpf_clone_redirect(skb, act->arg, 0) < 0)
				count(PX_SLOT_ERROR, 0);
			break;
		case PX_ACT_REDIRECT:
			return bpf_redirect(act->arg, 0);
		case PX_ACT_DROP:
			return TC_ACT_SHOT;
		case PX_ACT_GOTO:
			r->next = act->arg;
			return PX_RES_GOTO;
		case PX_ACT_VLAN_POP:
			if (bpf_skb_vlan_pop(skb) < 0)
				goto error;
			r->dirty = 1;
			break;
		case PX_ACT_VLAN_PUSH:
			tci = act->vid & 0x0fff;
			if (act->pcp != PX_PCP_NONE)
				tci |= (act->pcp & 7) << 13;
			if (bpf_skb_vlan_push(skb, act->tpid, tci) < 0)
				goto error;
			r->dirty = 1;
			break;
		case PX_ACT_VLAN_MODIFY:
			/* tc: no tag, no change; else a new VID (and PCP when
			 * given), re-tagged as 802.1Q. */
			if (!skb->vlan_present)
				break;
			tci = (skb->vlan_tci & ~0x0fff) | (act->vid & 0x0fff);
			if (act->pcp != PX_PCP_NONE)
				tci = (tci & ~0xe000) | ((act->pcp & 7) << 13);
			if (bpf_skb_vlan_pop(skb) < 0 ||
			    bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), tci) < 0)
				goto error;
			r->dirty = 1;
			break;
		case PX_ACT_SET_DST:
			if (bpf_skb_store_bytes(skb, 0, act->mac, 6, 0) < 0)
				goto error;
			r->dirty = 1;
			break;
		case PX_ACT_SET_SRC:
			if (bpf_skb_store_bytes(skb, 6, act->mac, 6, 0) < 0)
				goto error;
			r->dirty = 1;
			break;
		default:
			goto error;
		}
	}
	/* The compiler ends every list with an output, drop or goto;
	 * anything else is OpenFlow's implicit drop. */
	return TC_ACT_SHOT;
error:
	count(PX_SLOT_ERROR, wire_len(skb));
	return TC_ACT_SHOT;
}

SEC("classifier")
int px_classify(struct __sk_buff *skb)
{
	struct px_lookup lk = {}, probe = {};
	struct px_result r = {};
	__u32 zero = 0, epoch, stage;
	struct px_active *active = bpf_map_lookup_elem(&px_active, &zero);
	int dirty = 1;

	if (!active)
		return TC_ACT_UNSPEC;
	/* One load: the epoch, and with it the generation. */
	epoch = *(volatile __u32 *)&active->epoch;
	lk.key.ifindex = skb->ingress_ifindex;

	for (stage = 0; stage < PX_MAX_STAGES; stage++) {
		struct px_flow *f;
		int rc;

		if (dirty)
			px_parse(skb, &lk.key);
		f = lookup(epoch, &lk, &probe);
		if (!f) {
			count(PX_SLOT_MISS, wire_len(skb));
			/* A miss in table 0 lets later tc filters see the
			 * packet; after a goto it passes, as a flower chain
			 * miss does. */
			return stage == 0 ? TC_ACT_UNSPEC : TC_ACT_OK;
		}
		count(f->slot, wire_len(skb));
		rc = px_act(skb, f, &r);
		if (rc != PX_RES_GOTO)
			return rc;
		dirty = r.dirty;
		lk.key.table = r.next;
	}
	count(PX_SLOT_ERROR, wire_len(skb));
	return TC_ACT_SHOT;
}

char _license[] SEC("license") = "Dual BSD/GPL";
