/* Model 3: fencing and failover (issue 13). docs/cluster-state.md, "The
 * model", says what it covers, what it leaves out and how to run it;
 * tests/model/run-models.sh checks it in `make test`.
 *
 * What it stands for:
 *   the state   ha/cluster_state.c cl_state_apply_config (a lost host: a new
 *               fencing episode, its VMs `lost`; a member again: its fencing
 *               ends) and cl_state_fencer; ha/state_apply.c h_host_fenced,
 *               h_host_fence_failed, h_vm_report, h_host_announce, and the
 *               quorum gate of cl_state_apply; ha/failover.c
 *               cl__release_fenced and cl__recover with ha/plan.c's placement;
 *   the agents  agent/ha.c (ha_reconcile, episode_of/episode_end,
 *               settle_episode: the fencer's levels and the watchdog
 *               deadline; on_feed: watchdog_healthy while quorate; arming
 *               once quorate), agent/agent.c track_quorum (quorum_lost_at),
 *               agent/local_vms.c settle and local_reconcile (start a VM the
 *               state gives this host, kill one it puts elsewhere on a
 *               settled quorate state, the self-stop of HA VMs after
 *               LOCAL_HA_SELF_STOP_S out of quorum, reports);
 *   the device  fencing/watchdog.c (the feeder thread and its latch) and a
 *               watchdog device that resets the host W after its last
 *               keepalive.
 *
 * Three hosts (node ids 0 < 1 < 2, expected votes 3: two are a quorum), two
 * HA VMs (V0 before V1 in priority), each host with room for one VM. At the
 * start V0 runs on host 1, V1 on host 2, host 0 is empty; one quorate
 * configuration of all three; the watchdogs armed, fed and announced. Host
 * 0 has a fence device and no watchdog, host 1 both, host 2 only its
 * watchdog (DEVS, WDS).
 *
 * One process, `world`, plays everything. Each iteration of its loop picks
 * one enabled event and does it atomically (its guard, then d_steps), after
 * which the agents settle and the properties are checked:
 *   - corosync: each host's replica holds the configuration it was last
 *     given (mem[]); members of one configuration hold the same state, and a
 *     message is applied by all of them in one step. A merge installs the
 *     winner's state: model 1's fixed rule in one step (the highest quorum
 *     epoch, which is the quorate configuration's own unique number, among
 *     all members, synced or persisted copies; two members always make a
 *     majority here; between equal epochs a synced copy beats a persisted
 *     one, which it went on from, and otherwise any of them, as the model
 *     does not count the versions the C compares next). The configuration is
 *     applied to it and its members announce themselves (h_host_announce: a
 *     host back after a fence is `none` again). When a host leaves (crash,
 *     freeze, partition, power off), the others get their configuration at
 *     once; the host that left keeps believing in the old one (`stale`:
 *     quorate if it was) until its own corosync notices, within LAG ticks of
 *     its running time (LAG 0: within the same second). Model 1's corner
 *     case (agreed delivery at a split) is left out: results and reports are
 *     sent again, level-triggered, until they apply;
 *   - time: a `tick` is one second (the unit of W and of the 1 s self-stop);
 *     timers are counters that saturate. Events between two ticks happen in
 *     any order at unknown moments of that second, so the model rounds
 *     against safety: a lost host's last watchdog_healthy and keepalive are
 *     taken as late as they may have been, its self-stop as late as it may
 *     come, the survivors' deadline as early as it may pass. What real time
 *     forces happens before the next tick: a stale host's corosync (LAG),
 *     the self-stop, and what a running agent does at once (its loop runs
 *     every 200 ms, and on a timer at the deadline): starts, kills, reports,
 *     a deadline's host_fenced. A fence device, a merge, a boot take as
 *     long as they take;
 *   - the adversary, within budgets: partition a host away (it keeps running
 *     alone, without quorum), freeze a host (the whole host: its agent, its
 *     feeder thread, its corosync and its VMs stop; its watchdog device keeps
 *     counting), crash (power off) a host, make a fence device fail, confirm
 *     a host that is off (the operator: honest). Heals, merges and thaws are
 *     always possible, boots within BOOTS; the adversary may stop at any
 *     time;
 *   - the agents: start what their state gives them, kill what a settled
 *     quorate state puts elsewhere, kill their HA VMs once out of quorum for
 *     more than GRACE, report VMs running or gone, track fencing episodes,
 *     feed the watchdog while quorate; the fencer runs the target's fence
 *     device (it powers the target off, or fails) and broadcasts
 *     host_fenced/host_fence_failed, or host_fenced (watchdog) once the
 *     deadline has passed since it first saw the episode.
 *
 * Properties (assertions after every event):
 *   (a) a_two_running          no VM runs on two hosts at once (a frozen VM
 *                              process counts: it runs again when thawed);
 *   (b) b_unplaced_with_room   in the state of a quorate configuration, an
 *                              HA VM waits for room (`recover`) only while no
 *                              online host that is not being fenced has room;
 *   (c) c_released_unfenced    no state gives a VM of a lost host to anyone
 *                              else (or releases it) before that host is
 *                              fenced in it, or reported the VM gone itself;
 *   (e) e_fenced_not_off       host_fenced applies only for a host that has
 *                              been off (device, crash, watchdog reset) since
 *                              its ternd last joined: "fenced" is true;
 *   (f) f_started_without_quorum  an agent starts a VM only while its view is
 *                              quorate (design.md invariant 4);
 * and in every terminal state (nothing left to do: the adversary stopped,
 * the network healed, the hosts that are on merged, nothing due):
 *   (d) d_vm_not_running       when at least two hosts are on (a quorum:
 *                              all three unless BOOTS left one off), every
 *                              HA VM runs, on the host the state names, which
 *                              says it runs (d_not_settled: they are not all
 *                              in one synced configuration).
 *
 * The default is the protocol the model finds safe, and the C as it is:
 * 7ba3e35 took this model's first five fixes, and the commit after
 * 99fbd4a the last two (ha/replica.c's install, RECOVER_LOST_ONLY;
 * h_vm_report's `host_failed`, INSTALL_MEMBERS_ONLY). Each switch below
 * restores a choice the C made; docs/cluster-state.md has each
 * counterexample:
 *   C_DEADLINE          the survivors declare a watchdog host fenced once
 *                       watchdog_reset_deadline_ms(W) + 1 s have passed
 *                       since they saw it lost: W/2 + 0.25 + W + 1 s (agent/ha.c
 *                       as first committed, ca43215). Fixed (7ba3e35):
 *                       DL_FIXED below, which also covers a freeze shorter
 *                       than W/2 after which the host feeds again and the
 *                       lag of its corosync (the C: the membership timeout,
 *                       token + consensus; here LAG).
 *   SEEN_ANY_STATE      an agent starts a lost host's deadline when it first
 *                       sees the episode in any state, a minority's too
 *                       (ca43215: episode_of from ha_reconcile on any ready
 *                       replica). Fixed: only in a quorate one's.
 *   LATCH_RACE          after a freeze longer than W/2, the loop may call
 *                       watchdog_healthy before the feeder thread looks: it
 *                       feeds again (ca43215's fencing/watchdog.c). Fixed:
 *                       watchdog_healthy latches too.
 *   START_WITHOUT_QUORUM  local_reconcile starts a `starting` VM on any
 *                       synced state (ca43215's local_vms.c). Fixed: only
 *                       while the agent's view is quorate (agent_can_change).
 *   NO_CRASH_RECOVERY   an HA VM its own host reports gone (it stopped it
 *                       itself out of quorum, then came back before it was
 *                       fenced) is `crashed` for good (ca43215's
 *                       h_vm_report). Fixed: it waits for a host (`recover`).
 *   RECOVER_LOST_ONLY   (7ba3e35's h_vm_report) ... but only when the state
 *                       had it `lost` or is not quorate; otherwise it is
 *                       taken for the guest's own crash. A host that crashed
 *                       and rebooted, whose own disk copy (from before its
 *                       crash: the VM running there) wins a merge, reports
 *                       it gone in a quorate state: crashed for good. Fixed:
 *                       a report says whether the host failed (its ternd
 *                       found no process it did not see end: at start, or
 *                       stopped out of quorum), and such an HA VM waits for
 *                       a host (`host_failed`); here every gone report is
 *                       the host's (no guest crashes).
 *   INSTALL_MEMBERS_ONLY  a merge won by a persisted copy (its host went
 *                       down and came back) gets the new configuration with
 *                       the departures its new replica noted, none of those
 *                       before it went down (ha/replica.c's install): a host
 *                       online in that copy and not a member now is offline
 *                       but not lost, so it is never fenced and its VMs never
 *                       restarted. Fixed: it left as a node (lost). (The
 *                       C tells a host whose node is still in corosync's
 *                       ring, only its ternd away, from one whose node is
 *                       gone: offline, as CPG says for a ternd that stops.
 *                       In this model a host that is not a member is off,
 *                       frozen or cut off: its node is not in the ring.)
 *   AS_7BA3E35          the C from 7ba3e35 to 99fbd4a: INSTALL_MEMBERS_ONLY,
 *                       RECOVER_LOST_ONLY, and the last two below.
 *   DISARM_ON_STOP      an orderly stop of a ternd (SIGTERM; TSTOPS > 0)
 *                       disarms its watchdog (the C until this model took
 *                       the event). Fixed (agent.c on_signal/on_left): it
 *                       leaves the group first and disarms only if its
 *                       departure is delivered in a quorate configuration
 *                       (the others then see its process leave: offline,
 *                       not lost); otherwise the watchdog resets the host.
 *   NO_HOST_DOWN        a host whose ternd left (offline) and whose node
 *                       then goes too stays offline for good: CPG says
 *                       nothing, and its VMs stay its own. Fixed (agent/ha.c,
 *                       h_host_down): its would-be fencer, seeing its node
 *                       gone from corosync's ring, sends host_down: lost,
 *                       fenced. The state stops counting on the watchdog of
 *                       a host whose ternd left (wdc): it may be disarmed,
 *                       so such a host is fenced by a device or the
 *                       operator, never by its deadline.
 *   AS_FIRST_COMMITTED  agent/ha.c as first committed (ca43215): the first
 *                       six, DISARM_ON_STOP and NO_HOST_DOWN.
 * and switches that break the protocol on purpose (spec/ha-model-brief.md's):
 *   RELEASE_ON_LOST     the configuration change releases a lost host's VMs
 *                       (cl_state_apply_config without waiting for
 *                       host_fenced).
 *   NO_SELF_STOP        the minority does not kill its HA VMs (local_vms.c
 *                       settle) and has no watchdog, while the survivors use
 *                       the watchdog deadline.
 *   DEADLINE_TOO_SHORT  the survivors' deadline is shorter than the
 *                       watchdog's reset (W - 1 ticks).
 *   STALE_EPISODE       a result for an older episode is accepted: the agent
 *                       keeps its deadline per host, not per episode
 *                       (episode_of without the seq), and the state takes
 *                       any seq up to its own (h_host_fenced's seq check).
 *   FENCER_ANY_SIDE     a non-quorate side also fences and restarts
 *                       (cl_state_fencer, h_host_fenced, cl__recover,
 *                       agent_can_change, the episode's first sight and the
 *                       start without their quorum checks).
 * Budgets: PARTS (partitions), FREEZES, CRASHES, DEVFAIL (device failures),
 * OPCONF (operator confirmations), TSTOPS (orderly stops of a ternd, 0 by
 * default; its restart is always possible), BOOTS (of hosts that are off: without a
 * bound, two hosts whose peer stays away can reset each other in turn for
 * ever, each time with a new epoch). W: the watchdog timeout in ticks (4);
 * LAG (0: a host cut off notices before the next tick), GRACE (1); DL: the
 * survivors' deadline in ticks. CHECK_C=0, CHECK_D=0, CHECK_E=0, CHECK_F=0
 * turn a property off (to show what a broken variant leads to beyond the first
 * rule it breaks).
 */

#define N 3
#define MAJ 2
#define NV 2
#define NONE 3                  /* no owner */
#define CAP 1                   /* VMs a host has room for */
#define NOQ 255                 /* oq[]: not out of quorum */

#ifdef AS_7BA3E35
#define NO_HOST_DOWN
#define DISARM_ON_STOP
#define INSTALL_MEMBERS_ONLY
#define RECOVER_LOST_ONLY
#endif
#ifdef AS_FIRST_COMMITTED
#define NO_HOST_DOWN
#define DISARM_ON_STOP
#define C_DEADLINE
#define SEEN_ANY_STATE
#define LATCH_RACE
#define START_WITHOUT_QUORUM
#define NO_CRASH_RECOVERY
#define INSTALL_MEMBERS_ONLY
#endif

#ifndef W
#define W 4                     /* watchdog_timeout, ticks (seconds) */
#endif
#define WINDOW (W / 2)          /* the feeder feeds while the last healthy is younger */
#ifndef LAG
#define LAG 0                   /* a host cut off notices within LAG ticks of running time */
#endif
#ifndef GRACE
#define GRACE 1                 /* LOCAL_HA_SELF_STOP_S: out of quorum for more than this */
#endif
/* The survivors' deadline, in ticks since the fencer first saw the episode.
 * seen counts the ticks since; the real time elapsed is less than seen + 1,
 * so a deadline of D seconds may have passed from seen = ceil(D) - 1 on.
 * C_DEADLINE: watchdog_reset_deadline_ms(W) + 1 s = W/2 + 0.25 + W + 1 (W
 * even). Fixed: also W/2 for a freeze the feeder lets pass (the host feeds
 * again after it, with a stale quorate view) and the lag of a host that
 * notices late: W/2 + 0.25 + W + W/2 + LAG + 1 (agent/ha.c deadline_s: its
 * lag is corosync's membership timeout, token + consensus). */
#define DL_C (WINDOW + W + 1)
#define DL_FIXED (WINDOW + W + WINDOW + LAG + 1)
#ifndef DL
#ifdef DEADLINE_TOO_SHORT
#define DL (W - 1)
#else
#ifdef C_DEADLINE
#define DL DL_C
#else
#define DL DL_FIXED
#endif
#endif
#endif

#ifndef PARTS
#define PARTS 1
#endif
#ifndef FREEZES
#define FREEZES 1
#endif
#ifndef CRASHES
#define CRASHES 1
#endif
#ifndef DEVFAIL
#define DEVFAIL 1
#endif
#ifndef OPCONF
#define OPCONF 1
#endif
#ifndef BOOTS
#define BOOTS 2                 /* boots of hosts powered off */
#endif
#ifndef TSTOPS
#define TSTOPS 0                /* orderly stops of a ternd (SIGTERM) */
#endif
#ifndef DEVS
#define DEVS 3                  /* hosts with fence levels (bit mask): 0 and 1 */
#endif
#ifndef WDS
#define WDS 6                   /* hosts with a watchdog (armed once quorate, announced): 1 and 2 */
#endif
#ifndef CHECK_C
#define CHECK_C 1
#endif
#ifndef CHECK_E
#define CHECK_E 1
#endif
#ifndef CHECK_F
#define CHECK_F 1
#endif
#ifndef CHECK_D
#define CHECK_D 1
#endif

/* VM states in a replica (vst) */
#define V_STOP  0               /* no owner: stopped or crashed, not waiting */
#define V_WAIT  1               /* no owner, `recover`: an HA VM waiting for a host */
#define V_START 2               /* owner: starting */
#define V_RUN   3               /* owner: running (its owner reported it) */
#define V_LOST  4               /* owner lost: it may still run there */
/* Fencing of a host in a replica (fen) */
#define F_NONE 0
#define F_PEND 1
#define F_FAIL 2
#define F_DONE 3                /* fenced */
/* host_fenced methods */
#define M_DEV 0
#define M_WD  1
#define M_OP  2

#define BIT(h) (1 << (h))
#define HAS(m, h) (((m) >> (h)) & 1)
#define POP(m) (((m) & 1) + (((m) >> 1) & 1) + (((m) >> 2) & 1))
#define LOWEST(m) (((m) & 1) -> 0 : (((m) & 2) -> 1 : 2))
#define RV(r, v) ((r) * NV + (v))
#define RH(r, t) ((r) * N + (t))

/* ---------------- the hosts ---------------- */
bool pw[N];          /* powered (and its ternd runs, unless td) */
bool td[N];          /* its ternd stopped in order: the host, its corosync and VMs run on */
bool frz[N];         /* frozen: agent, feeder thread, corosync and VMs stopped */
bool stl[N];         /* its corosync has not noticed yet that its configuration ended */
byte sage[N];        /* ticks of running time since it became stale */
byte isl[N];         /* its network island */

/* ---------------- each host's replica ---------------- */
byte mem[N];         /* members of the configuration it was last given */
byte smem[N];        /* the members its state recorded last (online hosts): kept on disk */
bool syn[N];         /* synced (a cluster state, not a disk copy) */
byte qe[N];          /* quorum epoch: the last quorate configuration's number */
byte own[N * NV];    /* VM owner, NONE */
byte vst[N * NV];    /* VM state */
byte lf[N * NV];     /* ghost: the lost host (+1) whose VM it was when marked lost */
byte lostm[N];       /* hosts lost in this replica (bit mask) */
byte fen[N * N];     /* fencing state of each host */
byte fsq[N * N];     /* fencing episode (seq) of each host */
byte wdc[N];         /* hosts whose watchdog it counts on (announced; not since their
                        ternd left: an orderly stop may have disarmed it) */

/* ---------------- the agents and watchdogs ---------------- */
bool wdo[N];         /* the watchdog is open: armed, its feeder thread runs with ternd */
bool lat[N];         /* the feeder latched: it never feeds again */
bool fr[N];          /* the feeder could feed in this tick's interval */
byte hage[N];        /* when watchdog_healthy was last called: 0 in this tick's interval,
                        k in the interval k ticks back (saturates at WINDOW + 1) */
byte wage[N];        /* ticks since the last keepalive */
bool wasq[N];        /* was_quorate */
byte oq[N];          /* ticks out of quorum (quorum_lost_at), NOQ: quorate */
byte trk[N * N];     /* the episode (seq) agent o tracks for host t, 0: none */
byte seen[N * N];    /* ticks since agent o first saw that episode (saturates at DL) */
bool fails[N * N];   /* agent o's fence levels for t failed in that episode */

/* ---------------- VM processes ---------------- */
byte vr[NV];         /* hosts where the VM's process exists (bit mask) */

/* ---------------- adversary, ghosts ---------------- */
byte gq;             /* quorate configurations formed so far (their numbers) */
byte nparts, nfrz, ncrash, ndfail, nopc, nboots, ntstop;
bool adv_done;
bool goff[N];        /* off since its ternd last joined a configuration */
bool tku;            /* a tick would change something */
bool ovd;            /* something real time forces is due before the next tick */
/* Scratch is not part of the state (hidden), except with SHORTEST: pan
 * cannot search breadth first (-DBFS, the shortest counterexample) with
 * hidden variables; then it is zeroed between events. Hidden variables
 * must be set before they are read within one atomic step (a loop over
 * one outside a d_step would be cut short: its states look the same). */
#ifdef SHORTEST
#define SCRATCH byte
#else
#define SCRATCH hidden byte
#endif
SCRATCH ev, ea, eb;   /* the event chosen and its arguments */

/* the properties, named so that spin's report says which */
SCRATCH a_two_running, b_unplaced_with_room, c_released_unfenced, e_fenced_not_off,
     f_started_without_quorum, d_not_settled, d_vm_not_running;

/* each inline has its own */
SCRATCH r_v, r_k, r_m;          /* recover */
SCRATCH o_x;                    /* room */
SCRATCH l_v;                    /* release */
SCRATCH c_j, c_b;               /* apply_config */
SCRATCH f_v;                    /* apply_fenced */
SCRATCH f_ok;
SCRATCH w_w, w_n;               /* others_leave */
SCRATCH p_w;                    /* power_off */
SCRATCH s_r;                    /* send_* */
SCRATCH m_j, m_k, m_n, m_a, m_p; /* merge */
SCRATCH k_i, k_j;               /* ticks */
SCRATCH th_h, th_w;
SCRATCH th_l, th_r;
SCRATCH a_r, a_b;               /* settle_all, track */
SCRATCH q_i, q_v, q_k, q_m;     /* check */
SCRATCH x_t;                    /* events */

inline reset_tmp() {
#ifdef SHORTEST
	r_v = 0; r_k = 0; r_m = 0; o_x = 0; l_v = 0; c_j = 0; c_b = 0; f_v = 0; f_ok = 0;
	w_w = 0; w_n = 0; p_w = 0; s_r = 0; m_j = 0; m_k = 0; m_n = 0; m_a = 0; m_p = 0; k_i = 0;
	k_j = 0; th_h = 0; th_w = 0; th_l = 0; th_r = 0; a_r = 0; a_b = 0; q_i = 0; q_v = 0;
	q_k = 0; q_m = 0; x_t = 0; ev = 0; ea = 0; eb = 0
#else
	skip
#endif
}

#define QR(r) (POP(mem[r]) >= MAJ)
#define UP(h) (pw[h] && !frz[h] && !td[h])         /* its agent runs */
#define CUR(h) (UP(h) && !stl[h])                  /* ... in a current configuration: it can send */
#define AQ(h) (pw[h] && syn[h] && QR(h))           /* its agent's view: quorate */
#define FEEDING(h) (UP(h) && wdo[h] && !lat[h])

/* The quorum checks a switch removes */
#ifdef FENCER_ANY_SIDE
#define FQ(r) true
#define AGENT_Q(h) true
#else
#define FQ(r) QR(r)       /* cl_state_fencer, h_host_fenced, cl__recover */
#define AGENT_Q(h) AQ(h)  /* agent_can_change */
#endif
#ifdef STALE_EPISODE
#define SEQ_OK(s, cur) ((s) > 0 && (s) <= (cur))
#else
#define SEQ_OK(s, cur) ((s) == (cur))
#endif
#if defined(SEEN_ANY_STATE) || defined(FENCER_ANY_SIDE)
#define TRACK_OK(o) true
#else
#define TRACK_OK(o) QR(o)
#endif
#if defined(START_WITHOUT_QUORUM) || defined(FENCER_ANY_SIDE)
#define START_OK(h) true
#else
#define START_OK(h) AQ(h)
#endif
#ifdef NO_SELF_STOP
#define SELF_STOP 0
#define WD_ARMS 0
#else
#define SELF_STOP 1
#define WD_ARMS 1
#endif

/* A possible fencer of t in replica r: online, not being fenced. The
 * fencer: quorate, the lowest such id (cl_state_fencer). */
#define FEN_ELIG(r, h, t) ((h) != (t) && HAS(mem[r], h) && fen[RH(r, h)] == F_NONE)
#define IS_FENCER(o, t) (FQ(o) && FEN_ELIG(o, o, t) && \
	((o) < 1 || !FEN_ELIG(o, 0, t)) && ((o) < 2 || !FEN_ELIG(o, 1, t)))
/* HA VM processes on h */
#define HA_ON(h) (HAS(vr[0], h) || HAS(vr[1], h))

/* ---------------- the state: ha/ ---------------- */

/* Room on host h in replica r: its capacity minus the VMs it owns (an owned
 * VM is never stopped or crashed here: those lose their owner). */
inline room(r, h, res) {
	res = CAP; o_x = 0;
	do
	:: o_x < NV -> if :: own[RV(r, o_x)] == h -> res-- :: else fi; o_x++
	:: else -> break
	od
}

/* cl__recover (ha/failover.c, ha/plan.c), after every applied message and
 * configuration, in a quorate configuration: the VMs waiting, by priority
 * (V0 first), each on an online host not being fenced with room, the most
 * room first, then the first by id (every host has the same capacity
 * here: the first with room). */
inline recover(r) {
	if
	:: FQ(r) ->
		r_v = 0;
		do
		:: r_v < NV ->
			if
			:: vst[RV(r, r_v)] == V_WAIT ->
				r_k = 0;
				do
				:: r_k < N ->
					if
					:: HAS(mem[r], r_k) && fen[RH(r, r_k)] == F_NONE ->
						room(r, r_k, r_m);
						if
						:: r_m > 0 -> own[RV(r, r_v)] = r_k; vst[RV(r, r_v)] = V_START; break
						:: else
						fi
					:: else
					fi;
					r_k++
				:: else -> break
				od
			:: else
			fi;
			r_v++
		:: else -> break
		od
	:: else
	fi
}

/* cl__release_fenced: the VMs the host owned lose their owner; an HA VM
 * meant to run waits for a host (all VMs here are HA and meant to run). */
inline release(r, t) {
	l_v = 0;
	do
	:: l_v < NV ->
		if
		:: own[RV(r, l_v)] == t -> own[RV(r, l_v)] = NONE; vst[RV(r, l_v)] = V_WAIT
		:: else
		fi;
		l_v++
	:: else -> break
	od
}

/* cl_state_apply_config on replica r: members M, the hosts in LN left as
 * nodes (CL_LEFT_NODE). The caller has advanced gq if M is a quorum. */
inline apply_config(r, M, LN) {
	c_j = 0;
	do
	:: c_j < N ->
		if
		:: HAS(M, c_j) ->
			/* a member (again): not lost; a fence not done yet ends */
			lostm[r] = lostm[r] & (7 - BIT(c_j));
			if
			:: fen[RH(r, c_j)] == F_PEND || fen[RH(r, c_j)] == F_FAIL -> fen[RH(r, c_j)] = F_NONE
			:: else
			fi
		:: else
		fi;
		if
		:: HAS(LN, c_j) && !HAS(lostm[r], c_j) ->
			/* lost: a new episode, unless fenced already */
			lostm[r] = lostm[r] | BIT(c_j);
			if
			:: fen[RH(r, c_j)] != F_DONE -> fen[RH(r, c_j)] = F_PEND; fsq[RH(r, c_j)]++
			:: else
			fi
		:: else
		fi;
		c_j++
	:: else -> break
	od;
	mem[r] = M; smem[r] = M;
	/* VMs of lost hosts: lost (mark_lost); the ghost says whose */
	c_j = 0;
	do
	:: c_j < NV ->
		if
		:: own[RV(r, c_j)] != NONE && HAS(lostm[r], own[RV(r, c_j)]) ->
			vst[RV(r, c_j)] = V_LOST;
			lf[RV(r, c_j)] = own[RV(r, c_j)] + 1
		:: else
		fi;
		c_j++
	:: else -> break
	od;
#ifdef RELEASE_ON_LOST
	/* broken: released at once, without waiting for host_fenced */
	c_b = 0;
	do
	:: c_b < N -> if :: HAS(lostm[r], c_b) -> release(r, c_b) :: else fi; c_b++
	:: else -> break
	od;
#endif
	if :: QR(r) -> qe[r] = gq :: else fi;
	recover(r)
}

/* h_host_fenced on replica g (cl_state_apply: refused without quorum). */
inline apply_fenced(g, t, sq, meth) {
	f_ok = FQ(g);
	if :: fen[RH(g, t)] == F_DONE -> f_ok = 0 :: else fi;
	if :: meth != M_DEV && HAS(mem[g], t) -> f_ok = 0 :: else fi;   /* online: not off */
	if :: meth != M_OP && !SEQ_OK(sq, fsq[RH(g, t)]) -> f_ok = 0 :: else fi;
	if :: meth != M_OP && fen[RH(g, t)] == F_NONE && !HAS(lostm[g], t) -> f_ok = 0 :: else fi;
	if :: meth == M_OP && fen[RH(g, t)] == F_NONE && !HAS(lostm[g], t) -> f_ok = 0 :: else fi;
	if
	:: f_ok ->
		printf("   replica %d: host_fenced %d (episode %d, method %d) applied\n", g, t, sq, meth);
#if CHECK_E
		e_fenced_not_off = !goff[t];
		assert(!e_fenced_not_off);
#endif
		fen[RH(g, t)] = F_DONE;
		/* the ghost: its VMs are released by the fence */
		f_v = 0;
		do
		:: f_v < NV -> if :: lf[RV(g, f_v)] == t + 1 -> lf[RV(g, f_v)] = 0 :: else fi; f_v++
		:: else -> break
		od;
		release(g, t);
		recover(g)
	:: else
	fi
}

/* h_host_fence_failed (quorate only) */
inline apply_ffailed(g, t, sq) {
	if
	:: FQ(g) && sq == fsq[RH(g, t)] && (fen[RH(g, t)] == F_PEND || fen[RH(g, t)] == F_FAIL) ->
		fen[RH(g, t)] = F_FAIL
	:: else
	fi
}

/* h_vm_report from s (any configuration): running (1) or gone (0). */
inline apply_report(g, s, v, isrun) {
	if
	:: own[RV(g, v)] == s ->
		if
		:: isrun && (vst[RV(g, v)] == V_START || vst[RV(g, v)] == V_LOST) -> vst[RV(g, v)] = V_RUN
		:: isrun && !(vst[RV(g, v)] == V_START || vst[RV(g, v)] == V_LOST) -> skip
		:: else ->
			own[RV(g, v)] = NONE;
#if defined(NO_CRASH_RECOVERY)
			vst[RV(g, v)] = V_STOP    /* crashed, desired running: nothing restarts it */
#elif defined(RECOVER_LOST_ONLY)
			/* recover only if the state had it lost or is not quorate;
			 * otherwise taken for the guest's own crash */
			if
			:: vst[RV(g, v)] == V_LOST || !QR(g) -> vst[RV(g, v)] = V_WAIT
			:: else -> vst[RV(g, v)] = V_STOP
			fi
#else
			/* every gone here is its host's failure (a power-off, the
			 * self-stop out of quorum; no guest crashes in this model):
			 * an HA VM meant to run waits for a host */
			vst[RV(g, v)] = V_WAIT
#endif
		fi;
		lf[RV(g, v)] = 0;
		recover(g)
	:: else
	fi
}

/* h_host_announce of member h: its fencing ends (a fenced host was powered
 * on again: its VMs were released). */
inline apply_announce(g, h) {
	lostm[g] = lostm[g] & (7 - BIT(h));
	fen[RH(g, h)] = F_NONE;
	recover(g)
}

/* h_host_down (quorate only): an offline host, not lost, is lost now: its
 * node left corosync's ring after its ternd had left. */
inline apply_hostdown(g, t) {
	if
	:: FQ(g) && !HAS(mem[g], t) && !HAS(lostm[g], t) ->
		lostm[g] = lostm[g] | BIT(t);
		if :: fen[RH(g, t)] != F_DONE -> fen[RH(g, t)] = F_PEND; fsq[RH(g, t)]++ :: else fi;
		f_v = 0;
		do
		:: f_v < NV ->
			if
			:: own[RV(g, f_v)] == t -> vst[RV(g, f_v)] = V_LOST; lf[RV(g, f_v)] = t + 1
			:: else
			fi;
			f_v++
		:: else -> break
		od;
		recover(g)
	:: else
	fi
}

/* ---------------- the agents ---------------- */

/* track_quorum and ha_reconcile's arming, and what the tick reads: after
 * every event, for every host. */
inline note(h) {
	if
	:: UP(h) && AQ(h) ->
		oq[h] = NOQ; wasq[h] = 1;
		if :: !wdo[h] && WD_ARMS && HAS(WDS, h) -> wdo[h] = 1; wage[h] = 0; hage[h] = 0; lat[h] = 0 :: else fi;
		if :: wdo[h] -> hage[h] = 0 :: else fi
	:: UP(h) && !AQ(h) && wasq[h] && oq[h] == NOQ -> oq[h] = 0
	:: else
	fi;
	if :: FEEDING(h) -> fr[h] = 1 :: else fi
}

/* ha_reconcile's episodes (episode_of / episode_end), agent o, on a ready
 * replica. */
inline track(o) {
	if
	:: UP(o) && syn[o] ->
		a_b = 0;
		do
		:: a_b < N ->
			if
			:: a_b == o -> skip
			:: a_b != o && (fen[RH(o, a_b)] == F_PEND || fen[RH(o, a_b)] == F_FAIL) ->
				if
				:: trk[RH(o, a_b)] == fsq[RH(o, a_b)] -> skip
#ifdef STALE_EPISODE
				:: trk[RH(o, a_b)] != fsq[RH(o, a_b)] && trk[RH(o, a_b)] != 0 -> skip   /* kept per host */
#endif
				:: else ->
					if
					:: TRACK_OK(o) -> trk[RH(o, a_b)] = fsq[RH(o, a_b)]
					:: else -> trk[RH(o, a_b)] = 0
					fi;
					seen[RH(o, a_b)] = 0; fails[RH(o, a_b)] = 0
				fi
#ifdef STALE_EPISODE
			:: a_b != o && fen[RH(o, a_b)] != F_PEND && fen[RH(o, a_b)] != F_FAIL -> skip
#else
			:: a_b != o && fen[RH(o, a_b)] != F_PEND && fen[RH(o, a_b)] != F_FAIL ->
				trk[RH(o, a_b)] = 0; seen[RH(o, a_b)] = 0; fails[RH(o, a_b)] = 0
#endif
			fi;
			a_b++
		:: else -> break
		od
	:: else
	fi
}

inline settle_all() {
	a_r = 0;
	do
	:: a_r < N -> track(a_r); note(a_r); a_r++
	:: else -> break
	od
}

/* The others of h's configuration get a new one without h (its node left:
 * crash, freeze, partition, power off). h keeps its old view (the caller
 * says whether it is stale). */
inline others_leave(h) {
	if
	:: !stl[h] && (mem[h] & (7 - BIT(h))) != 0 ->
		w_n = mem[h] & (7 - BIT(h));
		if :: POP(w_n) >= MAJ -> gq++ :: else fi;
		w_w = 0;
		do
		:: w_w < N ->
			if
			:: HAS(w_n, w_w) && syn[w_w] -> apply_config(w_w, w_n, BIT(h))
			:: HAS(w_n, w_w) && !syn[w_w] -> mem[w_w] = w_n
			:: else
			fi;
			w_w++
		:: else -> break
		od
	:: else
	fi
}

/* The same, h's ternd only left (CPG's process leave) the configuration
 * M0: h is offline, not lost, and its watchdog no longer counted. */
inline others_leave_process(h, M0) {
	w_n = M0 & (7 - BIT(h));
	if :: POP(w_n) >= MAJ -> gq++ :: else fi;
	w_w = 0;
	do
	:: w_w < N ->
		if
		:: HAS(w_n, w_w) && syn[w_w] -> apply_config(w_w, w_n, 0); wdc[w_w] = wdc[w_w] & (7 - BIT(h))
		:: HAS(w_n, w_w) && !syn[w_w] -> mem[w_w] = w_n
		:: else
		fi;
		w_w++
	:: else -> break
	od
}

/* Every process of h stops: a crash, a fence device, a watchdog reset. Its
 * replica is its disk copy now (written as it went: model 1 has the disk's
 * lost tail). */
inline power_off(h) {
	others_leave(h);
	pw[h] = 0; frz[h] = 0; stl[h] = 0; sage[h] = 0; td[h] = 0;
	wdo[h] = 0; lat[h] = 0; fr[h] = 0; hage[h] = 0; wage[h] = 0;
	wasq[h] = 0; oq[h] = NOQ;
	mem[h] = 0; syn[h] = 0;
	goff[h] = 1;
	vr[0] = vr[0] & (7 - BIT(h)); vr[1] = vr[1] & (7 - BIT(h));
	p_w = 0;
	do
	:: p_w < N -> trk[RH(h, p_w)] = 0; seen[RH(h, p_w)] = 0; fails[RH(h, p_w)] = 0; p_w++
	:: else -> break
	od
}

/* A message from s, applied by every member of s's configuration. */
#define MEMBER_OF(g, s) (CUR(g) && syn[g] && mem[g] == mem[s])
inline send_fenced(s, t, sq, meth) {
	s_r = 0;
	do
	:: s_r < N -> if :: MEMBER_OF(s_r, s) -> apply_fenced(s_r, t, sq, meth) :: else fi; s_r++
	:: else -> break
	od
}
inline send_ffailed(s, t, sq) {
	s_r = 0;
	do
	:: s_r < N -> if :: MEMBER_OF(s_r, s) -> apply_ffailed(s_r, t, sq) :: else fi; s_r++
	:: else -> break
	od
}
inline send_report(s, v, isrun) {
	s_r = 0;
	do
	:: s_r < N -> if :: MEMBER_OF(s_r, s) -> apply_report(s_r, s, v, isrun) :: else fi; s_r++
	:: else -> break
	od
}

/* Configurations merge (M: the union of their members, one island; at
 * least two: a majority of the three). The winner WN is a member with the
 * highest quorum epoch, synced or not (model 1's fixed rule; between equal
 * epochs the C looks at the quorate version, then the version, then the
 * node id, which this model does not count: a synced copy beats a
 * persisted one, which it went on from, and otherwise any of them). Its state is
 * installed on every member, the configuration applied to it, and every
 * member announces itself (again: h_host_announce, a host back after a
 * fence is `none` again). A winner that is a persisted copy (its host
 * crashed and came back) gets the members only (ha/replica.c's install):
 * the hosts that were online in that copy and are not members now are not
 * marked lost (INSTALL_MEMBERS_ONLY); fixed: they left as nodes, unless
 * their node is in corosync's ring (only their ternd is away: offline). */
/* In corosync's ring on island i but not a CPG member: a host whose
 * ternd is not running (stopped in order), powered, not frozen, on it. (A
 * host on the ring whose ternd runs is a member of the configuration: this
 * model's separate configurations of one island stand for the moments
 * before corosync merges them.) */
#define INRING(h, i) (pw[h] && !frz[h] && td[h] && isl[h] == (i))
#define RING(i) (BIT(0) * INRING(0, i) + BIT(1) * INRING(1, i) + BIT(2) * INRING(2, i))
inline merge(M, WN) {
	m_n = 0; m_p = 0;
	if
	:: !syn[WN] ->
		m_n = smem[WN] & (7 - M) & (7 - lostm[WN]) & (7 - RING(isl[LOWEST(M)]));
		m_p = smem[WN] & (7 - M) & (7 - lostm[WN]) & RING(isl[LOWEST(M)])   /* left as processes */
	:: else
	fi;
#ifdef INSTALL_MEMBERS_ONLY
	m_n = 0;
#endif
	if :: POP(M) >= MAJ -> gq++ :: else fi;
	m_k = 0;
	do
	:: m_k < N ->
		if
		:: HAS(M, m_k) && m_k != WN ->
			m_j = 0;
			do
			:: m_j < NV -> own[RV(m_k, m_j)] = own[RV(WN, m_j)]; vst[RV(m_k, m_j)] = vst[RV(WN, m_j)];
			              lf[RV(m_k, m_j)] = lf[RV(WN, m_j)]; m_j++
			:: else -> break
			od;
			m_j = 0;
			do
			:: m_j < N -> fen[RH(m_k, m_j)] = fen[RH(WN, m_j)]; fsq[RH(m_k, m_j)] = fsq[RH(WN, m_j)]; m_j++
			:: else -> break
			od;
			lostm[m_k] = lostm[WN]; qe[m_k] = qe[WN]; smem[m_k] = smem[WN]
		:: else
		fi;
		m_k++
	:: else -> break
	od;
	m_k = 0;
	do
	:: m_k < N ->
		if
		:: HAS(M, m_k) ->
			if :: !syn[m_k] -> goff[m_k] = 0 :: else fi;   /* a new ternd joins */
			syn[m_k] = 1;
			apply_config(m_k, M, m_n)
		:: else
		fi;
		m_k++
	:: else -> break
	od;
	/* every member announces itself */
	m_a = 0;
	do
	:: m_a < N ->
		if
		:: HAS(M, m_a) ->
			m_k = 0;
			do
			:: m_k < N -> if :: HAS(M, m_k) -> apply_announce(m_k, m_a) :: else fi; m_k++
			:: else -> break
			od
		:: else
		fi;
		m_a++
	:: else -> break
	od
}

/* ---------------- the events' guards ---------------- */

/* The guards. The adversary: */
#define G_PART(h) (!adv_done && nparts < PARTS && \
	(((h) != 0 && isl[0] == isl[h]) || ((h) != 1 && isl[1] == isl[h]) || ((h) != 2 && isl[2] == isl[h])))
#define G_FREEZE(h) (!adv_done && nfrz < FREEZES && UP(h))
#define G_CRASH(h) (!adv_done && ncrash < CRASHES && pw[h])
/* Always possible: */
#define G_THAW(h) (frz[h])
#ifdef LATCH_RACE
#define G_THAW_RACE(h) (frz[h] && wdo[h] && !lat[h] && hage[h] > WINDOW && AQ(h))
#else
#define G_THAW_RACE(h) false
#endif
#define G_STALE(h) (stl[h] && UP(h))
#define G_BOOT(h) (!pw[h] && nboots < BOOTS)
#define G_TSTOP(h) (!adv_done && ntstop < TSTOPS && UP(h))
/* ha.c's host_down: o, the would-be fencer of t in a quorate state, sees t
 * offline (not a member), not lost, and its node not in corosync's ring
 * (off, frozen, or on another island) */
#define RINGNODE(t, i) (pw[t] && !frz[t] && isl[t] == (i))
#ifdef NO_HOST_DOWN
#define G_HOSTDOWN(o, t) false
#else
#define G_HOSTDOWN(o, t) (CUR(o) && syn[o] && AGENT_Q(o) && IS_FENCER(o, t) && \
	!HAS(mem[o], t) && !HAS(lostm[o], t) && !RINGNODE(t, isl[o]))
#endif
#define G_TSTART(h) (pw[h] && td[h])
/* two configurations of one island, named by their lowest members h < g */
#define G_MERGE(h, g) (CUR(h) && CUR(g) && mem[h] != mem[g] && LOWEST(mem[h]) == h && \
	LOWEST(mem[g]) == g && isl[h] == isl[g])
#define G_MERGE3 (CUR(0) && CUR(1) && CUR(2) && mem[0] == 1 && mem[1] == 2 && mem[2] == 4 && \
	isl[0] == isl[1] && isl[1] == isl[2])
/* w: a member of M with the highest quorum epoch; a persisted copy only if
 * no synced member has that epoch (a synced copy of an epoch went on from
 * any persisted copy of it: the C's quorate version and version order
 * them so) */
#define QEIN(M, j) (HAS(M, j) -> qe[j] : 0)
#define SYNCED_AT(M, j, e) (HAS(M, j) && syn[j] && qe[j] == (e))
#define WINS(M, w) (HAS(M, w) && qe[w] >= QEIN(M, 0) && qe[w] >= QEIN(M, 1) && qe[w] >= QEIN(M, 2) && \
	(syn[w] || !(SYNCED_AT(M, 0, qe[w]) || SYNCED_AT(M, 1, qe[w]) || SYNCED_AT(M, 2, qe[w]))))
/* The agents (local_vms.c): */
#define G_START(h, v) (UP(h) && syn[h] && own[RV(h, v)] == h && vst[RV(h, v)] == V_START && \
	!HAS(vr[v], h) && START_OK(h))
#define G_KILL(h, v) (UP(h) && syn[h] && AQ(h) && HAS(vr[v], h) && own[RV(h, v)] != h)
#define G_REP_RUN(h, v) (CUR(h) && syn[h] && own[RV(h, v)] == h && \
	(vst[RV(h, v)] == V_START || vst[RV(h, v)] == V_LOST) && HAS(vr[v], h))
#define G_REP_GONE(h, v) (CUR(h) && syn[h] && own[RV(h, v)] == h && \
	(vst[RV(h, v)] == V_RUN || vst[RV(h, v)] == V_LOST) && !HAS(vr[v], h))
#define G_SELF_STOP(h) (SELF_STOP && UP(h) && syn[h] && oq[h] != NOQ && oq[h] > GRACE && HA_ON(h))
/* The fencer o of host t (ha.c settle_episode): */
#define FENCING(o, t) (UP(o) && syn[o] && IS_FENCER(o, t) && AGENT_Q(o) && \
	(fen[RH(o, t)] == F_PEND || fen[RH(o, t)] == F_FAIL) && trk[RH(o, t)] != 0)
#define G_FENCE_OK(o, t) (HAS(DEVS, t) && FENCING(o, t))
#define G_FENCE_BAD(o, t) (!adv_done && ndfail < DEVFAIL && HAS(DEVS, t) && FENCING(o, t))
#define G_DEADLINE(o, t) (HAS(WDS, t) && HAS(wdc[o], t) && FENCING(o, t) && CUR(o) && !HAS(mem[o], t) && \
	(!HAS(DEVS, t) || fails[RH(o, t)]) && seen[RH(o, t)] >= DL)
/* The operator confirms host t, which is off, through host s of a quorate
 * configuration where t is lost or being fenced. */
#define G_CONFIRM(t, s) (!adv_done && nopc < OPCONF && !pw[t] && (s) != (t) && \
	CUR(s) && syn[s] && QR(s) && (HAS(lostm[s], t) || fen[RH(s, t)] != F_NONE) && fen[RH(s, t)] != F_DONE)

/* ---------------- time ---------------- */

/* One host over one tick: its keepalive age, latch, reset, and its healthy
 * age after the tick (into th_*). A healthy call or keepalive made in the
 * interval is taken at its end (as late as it may have been): at the tick,
 * hage is the age of the last healthy call in whole ticks, and the real age
 * during the interval was more than hage - 1. The feeder may have fed in
 * the interval while that was under W/2 (hage <= WINDOW); it has certainly
 * latched once hage > WINDOW. */
#define CALLING(h) (UP(h) && AQ(h) && wdo[h])
inline tick_host(h) {
	th_h = hage[h]; th_w = wage[h]; th_l = lat[h]; th_r = 0;
	if
	:: wdo[h] ->
		if
		:: fr[h] && hage[h] <= WINDOW -> th_w = 0               /* fed */
		:: else ->
			if :: FEEDING(h) && hage[h] > WINDOW -> th_l = 1 :: else fi;   /* latched */
			th_w++
		fi;
		th_r = (th_w >= W);
		if
		:: CALLING(h) -> th_h = 0
		:: else -> if :: th_h <= WINDOW -> th_h++ :: else fi
		fi
	:: else
	fi
}

/* tku: a tick changes something; ovd: something is due first. */
inline tick_need() {
	tku = 0; ovd = 0;
	k_i = 0;
	do
	:: k_i < N ->
		if
		:: pw[k_i] ->
			tick_host(k_i);
			if
			:: th_h != hage[k_i] || th_w != wage[k_i] || th_l != lat[k_i] || th_r || fr[k_i] != FEEDING(k_i) ||
			   (oq[k_i] != NOQ && oq[k_i] <= GRACE) || (stl[k_i] && !frz[k_i] && sage[k_i] < LAG) -> tku = 1
			:: else
			fi;
			k_j = 0;
			do
			:: k_j < N -> if :: trk[RH(k_i, k_j)] != 0 && seen[RH(k_i, k_j)] < DL -> tku = 1 :: else fi; k_j++
			:: else -> break
			od;
			/* due: a stale host's own configuration; the self-stop; what a
			 * running agent does at once (its loop wakes every 200 ms, and on
			 * a timer at the deadline): starts, kills, reports, a deadline */
			if
			:: stl[k_i] && !frz[k_i] && sage[k_i] >= LAG -> ovd = 1
			:: SELF_STOP && UP(k_i) && syn[k_i] && oq[k_i] != NOQ && oq[k_i] > GRACE && HA_ON(k_i) -> ovd = 1
			:: else
			fi;
			k_j = 0;
			do
			:: k_j < NV ->
				if
				:: G_START(k_i, k_j) || G_KILL(k_i, k_j) || G_REP_RUN(k_i, k_j) || G_REP_GONE(k_i, k_j) -> ovd = 1
				:: else
				fi;
				k_j++
			:: else -> break
			od;
			k_j = 0;
			do
			:: k_j < N -> if :: k_j != k_i && (G_DEADLINE(k_i, k_j) || G_HOSTDOWN(k_i, k_j)) -> ovd = 1 :: else fi; k_j++
			:: else -> break
			od
		:: else
		fi;
		k_i++
	:: else -> break
	od
}

inline do_tick() {
	k_i = 0;
	do
	:: k_i < N ->
		if
		:: pw[k_i] ->
			tick_host(k_i);
			hage[k_i] = th_h; wage[k_i] = th_w; lat[k_i] = th_l;
			if :: oq[k_i] != NOQ && oq[k_i] <= GRACE -> oq[k_i]++ :: else fi;
			if :: stl[k_i] && !frz[k_i] && sage[k_i] < LAG -> sage[k_i]++ :: else fi;
			k_j = 0;
			do
			:: k_j < N -> if :: trk[RH(k_i, k_j)] != 0 && seen[RH(k_i, k_j)] < DL -> seen[RH(k_i, k_j)]++ :: else fi; k_j++
			:: else -> break
			od;
			if
			:: th_r -> printf("   host %d: its watchdog resets it\n", k_i); power_off(k_i)
			:: else -> fr[k_i] = FEEDING(k_i)
			fi
		:: else
		fi;
		k_i++
	:: else -> break
	od
}

/* ---------------- checks ---------------- */

/* The replay's lines (counterexample.txt), one per host after every event:
 * on, frozen, island, stale (its corosync has not noticed yet), conf (the
 * members it was given, bit mask), synced, epoch (quorum epoch); then its
 * replica: V0 and V1 as owner/state (owner 3: none; state 0 stopped or
 * crashed, 1 waiting for a host, 2 starting, 3 running, 4 lost) and each
 * host's fence state/episode (0 none, 1 pending, 2 failed, 3 fenced); its
 * watchdog: open, latched, healthy_age (0: healthy called in this second),
 * keepalive_age, outq (seconds out of quorum, 255: quorate); seen: for each
 * host, the episode its agent tracks (0: none) / seconds since it first saw
 * it. Then the hosts each VM's process is on. */
inline dump() {
	q_i = 0;
	do
	:: q_i < N ->
		printf("   h%d: on%d frozen%d island%d stale%d conf%d synced%d epoch%d | V0 %d/%d V1 %d/%d | fence h0 %d/%d h1 %d/%d h2 %d/%d | wd %d latched%d healthy_age%d keepalive_age%d outq%d | seen h0 %d/%d h1 %d/%d h2 %d/%d\n",
		       q_i, pw[q_i], frz[q_i], isl[q_i], stl[q_i], mem[q_i], syn[q_i], qe[q_i],
		       own[RV(q_i, 0)], vst[RV(q_i, 0)], own[RV(q_i, 1)], vst[RV(q_i, 1)],
		       fen[RH(q_i, 0)], fsq[RH(q_i, 0)], fen[RH(q_i, 1)], fsq[RH(q_i, 1)], fen[RH(q_i, 2)], fsq[RH(q_i, 2)],
		       wdo[q_i], lat[q_i], hage[q_i], wage[q_i], oq[q_i],
		       trk[RH(q_i, 0)], seen[RH(q_i, 0)], trk[RH(q_i, 1)], seen[RH(q_i, 1)], trk[RH(q_i, 2)], seen[RH(q_i, 2)]);
		q_i++
	:: else -> break
	od;
	printf("   processes: V0 on %d, V1 on %d (host bit masks)\n", vr[0], vr[1])
}

inline check() {
	/* (a) */
	a_two_running = POP(vr[0]) > 1 || POP(vr[1]) > 1;
	assert(!a_two_running);
	q_i = 0;
	do
	:: q_i < N ->
		/* (b): the state of a quorate configuration */
		if
		:: CUR(q_i) && syn[q_i] && QR(q_i) ->
			q_v = 0;
			do
			:: q_v < NV ->
				if
				:: vst[RV(q_i, q_v)] == V_WAIT ->
					q_k = 0;
					do
					:: q_k < N ->
						if
						:: HAS(mem[q_i], q_k) && fen[RH(q_i, q_k)] == F_NONE ->
							room(q_i, q_k, q_m);
							b_unplaced_with_room = q_m > 0;
							assert(!b_unplaced_with_room)
						:: else
						fi;
						q_k++
					:: else -> break
					od
				:: else
				fi;
				q_v++
			:: else -> break
			od
		:: else
		fi;
#if CHECK_C
		/* (c): a VM of a lost host stays its until fenced or reported */
		if
		:: syn[q_i] ->
			q_v = 0;
			do
			:: q_v < NV ->
				c_released_unfenced = lf[RV(q_i, q_v)] != 0 && own[RV(q_i, q_v)] != lf[RV(q_i, q_v)] - 1;
				assert(!c_released_unfenced);
				q_v++
			:: else -> break
			od
		:: else
		fi;
#endif
		q_i++
	:: else -> break
	od
}

/* ---------------- events ---------------- */

#define E_TICK      1
#define E_PART      2
#define E_FREEZE    3
#define E_CRASH     4
#define E_ADV_STOP  5
#define E_THAW      6
#define E_THAW_RACE 7
#define E_HEAL      8
#define E_BOOT      9
#define E_STALE     10
#define E_MERGE     11   /* ea: the union of the configurations, eb: the winner */
#define E_START     12   /* ea: host, eb: VM */
#define E_KILL      13
#define E_REP_RUN   14
#define E_REP_GONE  15
#define E_SELF_STOP 16
#define E_FENCE_OK  17   /* ea: fencer, eb: target */
#define E_FENCE_BAD 18
#define E_DEADLINE  19
#define E_CONFIRM   20   /* ea: target, eb: the quorate host it is sent through */
#define E_TSTOP     21
#define E_TSTART    22
#define E_HOSTDOWN  23   /* ea: the fencer, eb: the host */

#define PICK(g, e, a, b) :: g -> ev = e; ea = a; eb = b

inline run_event() {
	if
	:: ev == E_TICK ->
		printf("EV tick\n"); do_tick()
	:: ev == E_PART ->
		printf("EV host %d is cut off (partition)\n", ea); nparts++;
		isl[ea] = 3 + ea;
		if :: CUR(ea) && (mem[ea] & (7 - BIT(ea))) != 0 -> others_leave(ea); stl[ea] = 1; sage[ea] = 0 :: else fi
	:: ev == E_FREEZE ->
		printf("EV host %d freezes\n", ea); nfrz++;
		if :: !stl[ea] && (mem[ea] & (7 - BIT(ea))) != 0 -> others_leave(ea); stl[ea] = 1; sage[ea] = 0 :: else fi;
		frz[ea] = 1
	:: ev == E_CRASH ->
		printf("EV host %d crashes (powered off)\n", ea); ncrash++; power_off(ea)
	:: ev == E_ADV_STOP ->
		printf("EV the adversary stops\n"); adv_done = 1
	:: ev == E_THAW ->
		printf("EV host %d thaws\n", ea); frz[ea] = 0;
		/* the feeder looks first: once the window has passed it latches
		 * (the real age is more than hage - 1: the healthy call counted
		 * at the end of its interval was the latest it may have been) */
		if :: wdo[ea] && !lat[ea] && hage[ea] > WINDOW -> lat[ea] = 1 :: else fi
	:: ev == E_THAW_RACE ->
		printf("EV host %d thaws; its loop calls watchdog_healthy before the feeder looks\n", ea);
		frz[ea] = 0
	:: ev == E_HEAL ->
		printf("EV the network heals\n"); isl[0] = 0; isl[1] = 0; isl[2] = 0
	:: ev == E_BOOT ->
		printf("EV host %d boots; its ternd starts alone, unsynced\n", ea); nboots++;
		pw[ea] = 1; mem[ea] = BIT(ea); syn[ea] = 0
	:: ev == E_STALE ->
		printf("EV host %d's corosync notices: it is alone\n", ea);
		x_t = mem[ea] & (7 - BIT(ea)); stl[ea] = 0; sage[ea] = 0;
		if :: syn[ea] -> apply_config(ea, BIT(ea), x_t) :: else -> mem[ea] = BIT(ea) fi
	:: ev == E_MERGE ->
		printf("EV configurations merge: members %d (bit mask), the state of host %d wins\n", ea, eb);
		merge(ea, eb)
	:: ev == E_START ->
		printf("EV host %d starts V%d\n", ea, eb);
		f_started_without_quorum = CHECK_F && !AQ(ea); assert(!f_started_without_quorum);
		vr[eb] = vr[eb] | BIT(ea)
	:: ev == E_KILL ->
		printf("EV host %d kills V%d: the state puts it elsewhere\n", ea, eb);
		vr[eb] = vr[eb] & (7 - BIT(ea))
	:: ev == E_REP_RUN ->
		printf("EV host %d reports V%d running\n", ea, eb); send_report(ea, eb, 1)
	:: ev == E_REP_GONE ->
		printf("EV host %d reports V%d gone\n", ea, eb); send_report(ea, eb, 0)
	:: ev == E_SELF_STOP ->
		printf("EV host %d, out of quorum, kills its HA VMs\n", ea);
		vr[0] = vr[0] & (7 - BIT(ea)); vr[1] = vr[1] & (7 - BIT(ea))
	:: ev == E_FENCE_OK ->
		printf("EV host %d fences host %d (episode %d): its device powers it off\n", ea, eb, trk[RH(ea, eb)]);
		x_t = trk[RH(ea, eb)]; power_off(eb);
		if :: CUR(ea) -> send_fenced(ea, eb, x_t, M_DEV) :: else fi
	:: ev == E_FENCE_BAD ->
		printf("EV host %d fences host %d (episode %d): its device fails\n", ea, eb, trk[RH(ea, eb)]);
		ndfail++; fails[RH(ea, eb)] = 1;
		if :: CUR(ea) -> send_ffailed(ea, eb, trk[RH(ea, eb)]) :: else fi
	:: ev == E_DEADLINE ->
		printf("EV host %d: host %d's watchdog deadline has passed (episode %d)\n", ea, eb, trk[RH(ea, eb)]);
		send_fenced(ea, eb, trk[RH(ea, eb)], M_WD)
	:: ev == E_CONFIRM ->
		printf("EV the operator confirms host %d is off (through host %d)\n", ea, eb); nopc++;
		send_fenced(eb, ea, 0, M_OP)
	:: ev == E_TSTOP ->
		/* agent.c on_signal / on_left: it leaves the group; its departure
		 * is delivered in its current configuration (the others see its
		 * process leave), or, cut off, to nobody else (the others lost
		 * its node already) */
		x_t = !stl[ea] && QR(ea);
		printf("EV host %d's ternd stops in order (a quorum sees it go: %d)\n", ea, x_t); ntstop++;
		/* the others' configuration change: in the next step (eb: the
		 * configuration it left, if the others are still in it) */
		eb = 0;
		if :: !stl[ea] -> eb = mem[ea] & (7 - BIT(ea)) :: else fi;
#ifdef DISARM_ON_STOP
		x_t = 1;
#endif
		if :: x_t -> wdo[ea] = 0; lat[ea] = 0; hage[ea] = 0; wage[ea] = 0 :: else fi;
		td[ea] = 1; syn[ea] = 0; mem[ea] = BIT(ea); stl[ea] = 0; sage[ea] = 0;
		oq[ea] = NOQ; wasq[ea] = 0; fr[ea] = 0;
		x_t = 0;
		do
		:: x_t < N -> trk[RH(ea, x_t)] = 0; seen[RH(ea, x_t)] = 0; fails[RH(ea, x_t)] = 0; x_t++
		:: else -> break
		od
	:: ev == E_HOSTDOWN ->
		/* applied in the next step (one d_step would be too long for spin) */
		printf("EV host %d: host %d is offline and its node gone from the ring: host_down\n", ea, eb)
	:: ev == E_TSTART ->
		printf("EV host %d's ternd starts again, alone, unsynced (its VMs ran on)\n", ea);
		td[ea] = 0; mem[ea] = BIT(ea); syn[ea] = 0
	fi
}

active proctype world()
{
	d_step {
		gq = 1;
		x_t = 0;
		do
		:: x_t < N ->
			pw[x_t] = 1; mem[x_t] = 7; smem[x_t] = 7; syn[x_t] = 1; qe[x_t] = 1; oq[x_t] = NOQ; wasq[x_t] = 1;
			wdo[x_t] = WD_ARMS && HAS(WDS, x_t); fr[x_t] = wdo[x_t]; wdc[x_t] = WDS;
			own[RV(x_t, 0)] = 1; vst[RV(x_t, 0)] = V_RUN;
			own[RV(x_t, 1)] = 2; vst[RV(x_t, 1)] = V_RUN;
			x_t++
		:: else -> break
		od;
		vr[0] = BIT(1); vr[1] = BIT(2);
		tick_need();
		reset_tmp()
	};
	do
	:: atomic {
		if
		PICK(tku && !ovd, E_TICK, 0, 0)
		PICK(G_PART(0), E_PART, 0, 0) PICK(G_PART(1), E_PART, 1, 0) PICK(G_PART(2), E_PART, 2, 0)
		PICK(G_FREEZE(0), E_FREEZE, 0, 0) PICK(G_FREEZE(1), E_FREEZE, 1, 0) PICK(G_FREEZE(2), E_FREEZE, 2, 0)
		PICK(G_CRASH(0), E_CRASH, 0, 0) PICK(G_CRASH(1), E_CRASH, 1, 0) PICK(G_CRASH(2), E_CRASH, 2, 0)
		PICK(!adv_done, E_ADV_STOP, 0, 0)
		PICK(G_THAW(0), E_THAW, 0, 0) PICK(G_THAW(1), E_THAW, 1, 0) PICK(G_THAW(2), E_THAW, 2, 0)
		PICK(G_THAW_RACE(0), E_THAW_RACE, 0, 0) PICK(G_THAW_RACE(1), E_THAW_RACE, 1, 0)
		PICK(G_THAW_RACE(2), E_THAW_RACE, 2, 0)
		PICK(isl[0] != isl[1] || isl[1] != isl[2], E_HEAL, 0, 0)
		PICK(G_BOOT(0), E_BOOT, 0, 0) PICK(G_BOOT(1), E_BOOT, 1, 0) PICK(G_BOOT(2), E_BOOT, 2, 0)
		PICK(G_TSTOP(0), E_TSTOP, 0, 0) PICK(G_TSTOP(1), E_TSTOP, 1, 0) PICK(G_TSTOP(2), E_TSTOP, 2, 0)
		PICK(G_TSTART(0), E_TSTART, 0, 0) PICK(G_TSTART(1), E_TSTART, 1, 0) PICK(G_TSTART(2), E_TSTART, 2, 0)
		PICK(G_HOSTDOWN(0, 1), E_HOSTDOWN, 0, 1) PICK(G_HOSTDOWN(0, 2), E_HOSTDOWN, 0, 2)
		PICK(G_HOSTDOWN(1, 0), E_HOSTDOWN, 1, 0) PICK(G_HOSTDOWN(1, 2), E_HOSTDOWN, 1, 2)
		PICK(G_HOSTDOWN(2, 0), E_HOSTDOWN, 2, 0) PICK(G_HOSTDOWN(2, 1), E_HOSTDOWN, 2, 1)
		PICK(G_STALE(0), E_STALE, 0, 0) PICK(G_STALE(1), E_STALE, 1, 0) PICK(G_STALE(2), E_STALE, 2, 0)
		PICK(G_MERGE(0, 1) && WINS(mem[0] | mem[1], 0), E_MERGE, mem[0] | mem[1], 0)
		PICK(G_MERGE(0, 1) && WINS(mem[0] | mem[1], 1), E_MERGE, mem[0] | mem[1], 1)
		PICK(G_MERGE(0, 1) && WINS(mem[0] | mem[1], 2), E_MERGE, mem[0] | mem[1], 2)
		PICK(G_MERGE(0, 2) && WINS(mem[0] | mem[2], 0), E_MERGE, mem[0] | mem[2], 0)
		PICK(G_MERGE(0, 2) && WINS(mem[0] | mem[2], 1), E_MERGE, mem[0] | mem[2], 1)
		PICK(G_MERGE(0, 2) && WINS(mem[0] | mem[2], 2), E_MERGE, mem[0] | mem[2], 2)
		PICK(G_MERGE(1, 2) && WINS(mem[1] | mem[2], 0), E_MERGE, mem[1] | mem[2], 0)
		PICK(G_MERGE(1, 2) && WINS(mem[1] | mem[2], 1), E_MERGE, mem[1] | mem[2], 1)
		PICK(G_MERGE(1, 2) && WINS(mem[1] | mem[2], 2), E_MERGE, mem[1] | mem[2], 2)
		PICK(G_MERGE3 && WINS(7, 0), E_MERGE, 7, 0) PICK(G_MERGE3 && WINS(7, 1), E_MERGE, 7, 1)
		PICK(G_MERGE3 && WINS(7, 2), E_MERGE, 7, 2)
		PICK(G_START(0, 0), E_START, 0, 0) PICK(G_START(0, 1), E_START, 0, 1)
		PICK(G_START(1, 0), E_START, 1, 0) PICK(G_START(1, 1), E_START, 1, 1)
		PICK(G_START(2, 0), E_START, 2, 0) PICK(G_START(2, 1), E_START, 2, 1)
		PICK(G_KILL(0, 0), E_KILL, 0, 0) PICK(G_KILL(0, 1), E_KILL, 0, 1)
		PICK(G_KILL(1, 0), E_KILL, 1, 0) PICK(G_KILL(1, 1), E_KILL, 1, 1)
		PICK(G_KILL(2, 0), E_KILL, 2, 0) PICK(G_KILL(2, 1), E_KILL, 2, 1)
		PICK(G_REP_RUN(0, 0), E_REP_RUN, 0, 0) PICK(G_REP_RUN(0, 1), E_REP_RUN, 0, 1)
		PICK(G_REP_RUN(1, 0), E_REP_RUN, 1, 0) PICK(G_REP_RUN(1, 1), E_REP_RUN, 1, 1)
		PICK(G_REP_RUN(2, 0), E_REP_RUN, 2, 0) PICK(G_REP_RUN(2, 1), E_REP_RUN, 2, 1)
		PICK(G_REP_GONE(0, 0), E_REP_GONE, 0, 0) PICK(G_REP_GONE(0, 1), E_REP_GONE, 0, 1)
		PICK(G_REP_GONE(1, 0), E_REP_GONE, 1, 0) PICK(G_REP_GONE(1, 1), E_REP_GONE, 1, 1)
		PICK(G_REP_GONE(2, 0), E_REP_GONE, 2, 0) PICK(G_REP_GONE(2, 1), E_REP_GONE, 2, 1)
		PICK(G_SELF_STOP(0), E_SELF_STOP, 0, 0) PICK(G_SELF_STOP(1), E_SELF_STOP, 1, 0)
		PICK(G_SELF_STOP(2), E_SELF_STOP, 2, 0)
		PICK(G_FENCE_OK(0, 1), E_FENCE_OK, 0, 1) PICK(G_FENCE_OK(0, 2), E_FENCE_OK, 0, 2)
		PICK(G_FENCE_OK(1, 0), E_FENCE_OK, 1, 0) PICK(G_FENCE_OK(1, 2), E_FENCE_OK, 1, 2)
		PICK(G_FENCE_OK(2, 0), E_FENCE_OK, 2, 0) PICK(G_FENCE_OK(2, 1), E_FENCE_OK, 2, 1)
		PICK(G_FENCE_BAD(0, 1), E_FENCE_BAD, 0, 1) PICK(G_FENCE_BAD(0, 2), E_FENCE_BAD, 0, 2)
		PICK(G_FENCE_BAD(1, 0), E_FENCE_BAD, 1, 0) PICK(G_FENCE_BAD(1, 2), E_FENCE_BAD, 1, 2)
		PICK(G_FENCE_BAD(2, 0), E_FENCE_BAD, 2, 0) PICK(G_FENCE_BAD(2, 1), E_FENCE_BAD, 2, 1)
		PICK(G_DEADLINE(0, 1), E_DEADLINE, 0, 1) PICK(G_DEADLINE(0, 2), E_DEADLINE, 0, 2)
		PICK(G_DEADLINE(1, 0), E_DEADLINE, 1, 0) PICK(G_DEADLINE(1, 2), E_DEADLINE, 1, 2)
		PICK(G_DEADLINE(2, 0), E_DEADLINE, 2, 0) PICK(G_DEADLINE(2, 1), E_DEADLINE, 2, 1)
		/* through the lowest quorate host that can send it */
		PICK(G_CONFIRM(0, 1), E_CONFIRM, 0, 1) PICK(!G_CONFIRM(0, 1) && G_CONFIRM(0, 2), E_CONFIRM, 0, 2)
		PICK(G_CONFIRM(1, 0), E_CONFIRM, 1, 0) PICK(!G_CONFIRM(1, 0) && G_CONFIRM(1, 2), E_CONFIRM, 1, 2)
		PICK(G_CONFIRM(2, 0), E_CONFIRM, 2, 0) PICK(!G_CONFIRM(2, 0) && G_CONFIRM(2, 1), E_CONFIRM, 2, 1)
		fi;
		d_step { run_event(); skip };
		d_step {
			if
			:: ev == E_HOSTDOWN ->
				s_r = 0;
				do
				:: s_r < N -> if :: MEMBER_OF(s_r, ea) -> apply_hostdown(s_r, eb) :: else fi; s_r++
				:: else -> break
				od
			:: ev == E_TSTOP && eb != 0 -> others_leave_process(ea, eb)
			:: ev == E_MERGE ->
				/* the watchdogs the merged state counts: the winner's, but
				 * for hosts whose ternd the install found gone (their node
				 * in the ring), and those of the members, who announced */
				x_t = (wdc[eb] & (7 - m_p)) | (WDS & ea);
				s_r = 0;
				do
				:: s_r < N -> if :: HAS(ea, s_r) -> wdc[s_r] = x_t :: else fi; s_r++
				:: else -> break
				od
			:: else
			fi
		};
		d_step {
			settle_all();
			tick_need();
			dump();
			check();
			reset_tmp()
		}
	}
	:: else -> break
	od;
	/* (d) a terminal state: the hosts that are on (all of them, unless the
	 * BOOTS budget left one off; at least two: a quorum) are up in one
	 * synced configuration, and every HA VM runs on the host the state
	 * names, which says running */
	skip;    /* a break may not jump into a d_step */
	d_step {
		printf("END\n"); dump();
		x_t = BIT(0) * pw[0] + BIT(1) * pw[1] + BIT(2) * pw[2];
		if
		:: POP(x_t) >= MAJ ->
			q_i = LOWEST(x_t);
			d_not_settled = !((!pw[0] || (CUR(0) && syn[0] && mem[0] == x_t)) &&
			                  (!pw[1] || (CUR(1) && syn[1] && mem[1] == x_t)) &&
			                  (!pw[2] || (CUR(2) && syn[2] && mem[2] == x_t)));
			d_vm_not_running = POP(vr[0]) != 1 || POP(vr[1]) != 1 ||
			                   !HAS(vr[0], own[RV(q_i, 0)]) || !HAS(vr[1], own[RV(q_i, 1)]) ||
			                   vst[RV(q_i, 0)] != V_RUN || vst[RV(q_i, 1)] != V_RUN
		:: else -> d_not_settled = 0; d_vm_not_running = 0    /* no quorum left to run them */
		fi
	};
#if CHECK_D
	assert(!d_not_settled);
	assert(!d_vm_not_running)
#else
	skip
#endif
}
