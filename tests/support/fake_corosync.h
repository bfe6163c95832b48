/* A corosync stand-in for running ternd's agent in one process: the
 * cs_link_* functions of agent/corosync_link.h for a group of one.
 * Programs link tests/support/fake_corosync.c before the library, so that
 * agent/corosync_link.o is not used (see inproc_agent.h). The only member
 * is node FAKE_CS_NODEID, quorate with one expected vote; its nodelist has
 * that node alone, named FAKE_CS_NODE_NAME at FAKE_CS_NODE_ADDR. What the
 * agent sends comes back to it in send order as deliveries from that node,
 * on the next cs_link_dispatch (not within the dispatch that is running);
 * the first dispatch after cs_link_open brings the configuration change
 * with the node joining, then the totem ring (the ring callback,
 * cs_link_ring_seq): FAKE_CS_RING, the same at every open, as a process
 * that leaves and joins the group again stays in corosync's ring. The cpg
 * fd is an eventfd that is readable while something waits to be
 * dispatched; the votequorum fd never is (quorum never changes). */
#ifndef TERN_TESTS_SUPPORT_FAKE_COROSYNC_H
#define TERN_TESTS_SUPPORT_FAKE_COROSYNC_H

#define FAKE_CS_NODEID 1u
#define FAKE_CS_NODE_NAME "fz1"
#define FAKE_CS_NODE_ADDR "127.0.0.1"
#define FAKE_CS_RING 4u
/* Past this many bytes waiting for delivery, cs_link_try_send answers "try
 * again" (as corosync's flow control does); cs_link_send fails. */
#define FAKE_CS_MAX_QUEUED (64u << 20)

#endif
