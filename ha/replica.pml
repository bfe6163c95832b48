/* Model 1: the replica and its sync protocol (ha/replica.c, and the
 * configuration handling of ha/state_apply.c). docs/cluster-state.md, "The
 * model", says what it covers, what it leaves out and how to run it;
 * tests/model/run-models.sh checks it in `make test`.
 *
 * One process, `world`, plays everything: CPG (configurations and their
 * message order, partitions, merges, crashes, restarts, power loss) and every
 * node's replica. Each iteration of its loop is one event, done atomically:
 *   - a delivery: the head message of one configuration's order is handed to
 *     every member of that configuration. Virtual synchrony: members see the
 *     same messages in the same order, so delivering to all of them in one
 *     step loses no behaviour. The one exception, a message delivered in the
 *     old configuration on its sender's side of a split only (CPG's agreed,
 *     not safe, delivery), is part of the partition event;
 *   - a configuration change, after which each member runs replica_confchg;
 *   - a node's own action: a client change, an fsync.
 * The properties are assertions checked after every event (inline
 * check_invariants): they hold in every state between events.
 *
 * The protocol checked by default is the one the model shows to be safe. It
 * differs from spec/model-brief.md in four points, each with a switch that
 * restores the brief's choice and makes spin find an acknowledged change lost
 * (docs/cluster-state.md, "The model", has the counterexamples):
 *   LOCAL_EPOCH        q_epoch is a counter each state increments when it
 *                      applies a quorate configuration (brief). Fixed: q_epoch
 *                      is the sequence number of the quorate configuration
 *                      itself (unique cluster-wide and increasing, as corosync's
 *                      ring id), so two histories never share an epoch.
 *   CONFIG_AT_CONFCHG  a synced replica applies the new configuration at the
 *                      configuration change even when a round opens, and the
 *                      install applies it only for an unsynced winner (brief).
 *                      Fixed: in a round nobody applies the configuration; the
 *                      installed state gets it (once, in one history); an
 *                      interrupted round's queue is dropped, not applied.
 *   ORDER_BY_VERSION   the winner is highest q_epoch, then highest version
 *                      (brief). Fixed: then highest q_version, the version of
 *                      the last event applied in a quorate configuration, which
 *                      a non-quorate side cannot raise by changing membership.
 *   ACK_BY_VERSION     the origin acknowledges once a majority reported a
 *                      persisted version >= the change's (brief). Fixed: the
 *                      reports must also cover the current configuration's own
 *                      record (>= the version at which this replica applied
 *                      it), i.e. a majority persisted this quorate epoch.
 *   BRIEF_RULE         all four: the brief read literally.
 *   OLD_MERGE_RULE     the old replica.c: as BRIEF_RULE, but the winner is
 *                      "synced first, then higher version, then lowest id".
 *   MAIN_RULE          ha/replica.c as merged in main (commit 7c700e5):
 *                      LOCAL_EPOCH, CONFIG_AT_CONFCHG and ACK_BY_VERSION, with
 *                      offers of the counters from before the configuration,
 *                      q_version a count of the events applied while quorate,
 *                      the order q_epoch, q_version, version, and a pending
 *                      request kept through an install when the winning state
 *                      holds it. spin finds an acknowledged change lost.
 *   KEEP_PENDING       an origin keeps waiting for its acknowledgement across
 *                      the install of another node's state (the brief does not
 *                      say); spin finds a loss. Fixed: that wait ends there
 *                      (the client learns the outcome is unknown).
 *   STALE_WATERMARK    a member that installed another node's state reports the
 *                      persisted version of its old history until it saves the
 *                      new one (the brief does not say). Fixed: its watermark
 *                      restarts from the installed state's save.
 *   N=5                five nodes (make model-deep); EVMAX=k: at most k
 *                      partitions, merges, crashes, leaves and power losses;
 *                      CH=k: at most k client changes (1 or 2).
 */

#ifndef N
#define N 3
#endif
#define MAJ (N / 2 + 1)          /* quorum: EXPECTED/2+1 votes, EXPECTED = N */
#define BOOT_MIN MAJ             /* replica_set_bootstrap_quorum(EXPECTED/2+1) */
#define DEAD 255                 /* comp[] of a crashed node */
#ifndef EVMAX
#define EVMAX 4
#endif
#ifndef CH
#define CH 1
#endif
#define QMAX 6                   /* messages pending in one configuration */

#ifdef OLD_MERGE_RULE
#define BRIEF_RULE
#endif
#ifdef MAIN_RULE
/* ha/replica.c as merged in main (7c700e5): a state's own epoch counter,
 * the configuration applied at the configuration change, offers of the
 * counters from before it, q_version counting the events applied while
 * quorate, acknowledgement by version; a pending request survives an
 * install when the state that won holds it. */
#define LOCAL_EPOCH
#define CONFIG_AT_CONFCHG
#define ACK_BY_VERSION
#define PRECONFIG_OFFER
#define QV_COUNT
#define REBASE_PENDING
#endif
#ifdef BRIEF_RULE
#define LOCAL_EPOCH
#define CONFIG_AT_CONFCHG
#define ORDER_BY_VERSION
#define ACK_BY_VERSION
#endif

/* A message: type, sender, payload (a change id). The `persisted` reports
 * are not messages here: see check_acks. */
#define M_OFFER  0               /* sync_offer{members, q_epoch, version, synced} */
#define M_STATE  1               /* the winner's state (its chunks as one message) */
#define M_CHANGE 2               /* a client change, e.g. vm_define */
#define MSG(t, s, p) ((t) * 1024 + (s) * 32 + (p))
#define MTYPE(m) ((m) / 1024)
#define MSND(m) (((m) / 32) % 32)
#define MPAY(m) ((m) % 32)

/* --- CPG --- */
byte comp[N];        /* the configuration a node is in, named by its lowest member; DEAD */
short mq[N * QMAX];  /* mq[c*QMAX ...]: configuration c's undelivered messages, in order */
byte mlen[N];
byte cep[N];         /* epoch of configuration c if quorate: the quorate configurations'
                      * sequence number (corosync's ring id), unique and increasing */
byte gq;             /* the last such number handed out */
byte ev;             /* topology events so far (at most EVMAX) */

/* --- each replica; volatile: lost at a crash --- */
bool synced[N];      /* replica_synced() */
bool inr[N];         /* in a sync round */
byte offered[N];     /* round: members whose offer was delivered (mask) */
bool ssent[N];       /* round: this replica, the winner, sent its state */
byte rq[N];          /* round: queued client changes, up to 2: (id+1) + 4*(id+1) */
byte cfgv[N];        /* the version at which it applied its current configuration */
/* the replicated state (struct cl_state), abstracted */
byte ver[N];         /* version: events applied */
byte qe[N];          /* q_epoch */
byte qv[N];          /* q_version: version of the last event applied while quorate */
byte lg[N];          /* the client changes it contains (bit k: change k) */
bool quor[N];        /* the last configuration it applied was quorate */
#ifdef PRECONFIG_OFFER
byte oqe[N]; byte oqv[N]; byte ovr[N];   /* MAIN_RULE: what it offers in a round */
#endif

/* --- each node's disk: survives a crash --- */
byte pver[N]; byte pqe[N]; byte pqv[N]; byte plg[N];
/* (its quorate flag is not kept: an unsynced replica's is never read, and
 * an install sets it) */
bool pval[N];        /* the disk holds this replica's current history (no other
                      * node's state was installed since it was last written) */

/* --- clients; ghost state for the properties --- */
bool sent[CH];       /* change k was broadcast ... */
byte orig[CH];       /* ... by this node */
byte pend[CH];       /* the origin waits: the version at which k applied there (0: not) */
byte ackd;           /* changes acknowledged to their client (mask) */

/* Temporaries. Every event resets them to 0 (reset_tmp) so they never make
 * two otherwise equal states differ. */
byte ti, tj, tk, tc, tx, tn, tcnt, tq, tmask, tside;
byte mi, wi, ai, aj, bi;
byte dt, ds, dp, dx, dw, dj, dn;
short dmsg;
bool tint;
byte nver, nqe, nqv, nlg; bool nquor;

inline reset_tmp() {
	ti = 0; tj = 0; tk = 0; tc = 0; tx = 0; tn = 0; tcnt = 0; tq = 0; tmask = 0;
	tside = 0; mi = 0; wi = 0; ai = 0; aj = 0; bi = 0; dt = 0; ds = 0; dp = 0; dx = 0;
	dw = 0; dj = 0; dn = 0; dmsg = 0; tint = 0; nver = 0; nqe = 0; nqv = 0; nlg = 0;
	nquor = 0
}

/* res = mask of the members of configuration c */
inline members(c, res) {
	res = 0; mi = 0;
	do
	:: mi < N -> if :: comp[mi] == c -> res = res | (1 << mi) :: else fi; mi++
	:: else -> break
	od
}

/* res = number of members in mask */
inline popcount(mask, res) {
	res = 0; mi = 0;
	do
	:: mi < N -> if :: mask & (1 << mi) -> res++ :: else fi; mi++
	:: else -> break
	od
}

/* res = lowest member of mask (mask != 0) */
inline lowest(mask, res) {
	mi = 0;
	do
	:: mask & (1 << mi) -> break
	:: else -> mi++
	od;
	res = mi
}

/* comp[] = lowest(mask) for the members of mask: they form one configuration */
inline set_comp(mask) {
	lowest(mask, tk);
	mi = 0;
	do
	:: mi < N -> if :: mask & (1 << mi) -> comp[mi] = tk :: else fi; mi++
	:: else -> break
	od
}

/* A member broadcasts m in configuration c: appended to c's order. */
inline bcast(c, m) {
	assert(mlen[c] < QMAX);
	mq[c * QMAX + mlen[c]] = m;
	mlen[c]++
}

/* Configuration c ended: what it did not deliver is lost. */
inline drop_msgs(c) {
	mi = 0;
	do
	:: mi < mlen[c] -> mq[c * QMAX + mi] = 0; mi++
	:: else -> break
	od;
	mlen[c] = 0;
	cep[c] = 0
}

/* q_version after an event applied while quorate: the version then (fixed),
 * one more event (MAIN_RULE: a count), or not kept (ORDER_BY_VERSION). */
#if defined(QV_COUNT)
#define QV_STEP(q, v) q++
#elif defined(ORDER_BY_VERSION)
#define QV_STEP(q, v) skip
#else
#define QV_STEP(q, v) q = v
#endif

/* cl_state_apply for a client change: refused (no effect, not even on the
 * version) in a non-quorate configuration. */
inline apply_change(i, k) {
	if
	:: quor[i] ->
		ver[i]++;
		QV_STEP(qv[i], ver[i]);
		lg[i] = lg[i] | (1 << k);
		if
		:: orig[k] == i -> pend[k] = ver[i]   /* the origin waits for the watermark */
		:: else
		fi
	:: else
	fi
}

/* cl_state_apply_config for configuration c with n members, on node i's
 * state: version++, members, quorate, q_epoch. */
inline apply_config(i, c, n) {
	ver[i]++;
	cfgv[i] = ver[i];
	quor[i] = (n >= MAJ);
	if
	:: quor[i] ->
#ifdef LOCAL_EPOCH
		qe[i]++;
#else
		qe[i] = cep[c];
#endif
		QV_STEP(qv[i], ver[i]);
		skip
	:: else
	fi
}

/* replica.c apply_queue: what a round queued, in order */
inline apply_queue(i) {
	if :: rq[i] % 4 != 0 -> apply_change(i, rq[i] % 4 - 1) :: else fi;
	if :: rq[i] / 4 != 0 -> apply_change(i, rq[i] / 4 - 1) :: else fi;
	rq[i] = 0
}

inline enqueue(i, k) {
	if
	:: rq[i] == 0 -> rq[i] = k + 1
	:: else -> assert(rq[i] < 4); rq[i] = rq[i] + 4 * (k + 1)
	fi
}

/* Offer a beats offer b, b having the lower node id (round_winner). A
 * replica applies nothing in a round, so its offer is its state now
 * (MAIN_RULE: what it recorded at the configuration change). */
#if defined(OLD_MERGE_RULE)
#define BEATS(a, b) ((synced[a] && !synced[b]) || (synced[a] == synced[b] && ver[a] > ver[b]))
#elif defined(PRECONFIG_OFFER)
#define BEATS(a, b) (oqe[a] > oqe[b] || (oqe[a] == oqe[b] && (oqv[a] > oqv[b] || \
                     (oqv[a] == oqv[b] && ovr[a] > ovr[b]))))
#elif defined(ORDER_BY_VERSION)
#define BEATS(a, b) (qe[a] > qe[b] || (qe[a] == qe[b] && ver[a] > ver[b]))
#else
#define BEATS(a, b) (qe[a] > qe[b] || (qe[a] == qe[b] && qv[a] > qv[b]))
#endif

/* res = round_winner() among the members M, all offers in. Ties go to the
 * lowest node id (members are scanned in id order). */
inline round_winner(M, res) {
	res = 255; wi = 0;
	do
	:: wi < N ->
		if
		:: (M & (1 << wi)) && (res == 255 || BEATS(wi, res)) -> res = wi
		:: else
		fi;
		wi++
	:: else -> break
	od
}

/* Acknowledgement. The origin o tells its client "done" once a majority
 * reported, by `persisted` messages in this configuration, a persisted
 * version >= the version at which the change applied there
 * (replica_stable_version()), and (fixed) >= the version of this
 * configuration's own record (cfgv). Reports are not modelled as messages:
 * within one configuration a settled member's disk only grows along the
 * history it shares with the origin, and reports in flight die at every
 * configuration change, so "a majority of o's settled configuration members
 * have such a disk now" holds exactly when some delivery of their reports
 * would let o acknowledge. The model acknowledges as soon as it holds (after
 * every event): the largest set of acknowledged changes, the strictest
 * check of property 1. A member that installed another node's state has no
 * disk of this history until it fsyncs (pval). */
#ifdef ACK_BY_VERSION
#define DISK_OK(o, j, v) (pver[j] >= (v))
#else
#define DISK_OK(o, j, v) (pver[j] >= (v) && pver[j] >= cfgv[o])
#endif

#ifdef STALE_WATERMARK
#define DISK_CURRENT(j) true
#else
#define DISK_CURRENT(j) pval[j]
#endif

inline check_acks() {
	ai = 0;
	do
	:: ai < CH ->
		if
		:: pend[ai] > 0 && synced[orig[ai]] && !inr[orig[ai]] ->
			tcnt = 0; aj = 0;
			do
			:: aj < N ->
				if
				:: comp[aj] == comp[orig[ai]] && synced[aj] && !inr[aj] && DISK_CURRENT(aj) &&
				   DISK_OK(orig[ai], aj, pend[ai]) -> tcnt++
				:: else
				fi;
				aj++
			:: else -> break
			od;
			if
			:: tcnt >= MAJ -> ackd = ackd | (1 << ai); pend[ai] = 0
			:: else
			fi
		:: else
		fi;
		ai++
	:: else -> break
	od
}

/* The head message of configuration c (members M) is delivered to the
 * members in X: all of M, or in a split its sender's side (see partition). */
inline deliver(c, X, M) {
	dmsg = mq[c * QMAX];
	mi = 0;
	do
	:: mi + 1 < mlen[c] -> mq[c * QMAX + mi] = mq[c * QMAX + mi + 1]; mi++
	:: else -> break
	od;
	mlen[c]--;
	mq[c * QMAX + mlen[c]] = 0;
	dt = MTYPE(dmsg); ds = MSND(dmsg); dp = MPAY(dmsg);
	popcount(M, dn);
	if
	:: dt == M_OFFER ->
		/* handle_offer: noted; once all are in, round_winner */
		dj = 0; dx = 0;
		do
		:: dj < N ->
			if
			:: (X & (1 << dj)) && inr[dj] ->
				offered[dj] = offered[dj] | (1 << ds);
				if :: offered[dj] == M -> dx = dx | (1 << dj) :: else fi
			:: else
			fi;
			dj++
		:: else -> break
		od;
		if
		:: dx != 0 ->   /* the members in dx have every offer now */
			round_winner(M, dw);
			if
			:: !synced[dw] && dn < BOOT_MIN ->
				/* no winner: an unsynced copy among too few members. Synced
				 * members go on, unsynced ones wait for the next change. */
				dj = 0;
				do
				:: dj < N ->
					if
					:: dx & (1 << dj) ->
						if
						:: synced[dj] ->
#ifndef CONFIG_AT_CONFCHG
							apply_config(dj, c, dn);
#endif
							apply_queue(dj)
						:: else -> rq[dj] = 0
						fi;
						inr[dj] = 0
					:: else
					fi;
					dj++
				:: else -> break
				od
			:: else ->
				if
				:: (dx & (1 << dw)) && !ssent[dw] ->
					ssent[dw] = 1;      /* maybe_send_state */
					bcast(c, MSG(M_STATE, dw, 0))
				:: else
				fi
			fi
		:: else
		fi
	:: dt == M_STATE ->
		/* handle_chunk -> install. The winner applied nothing since it
		 * sent: its state now is the state it sent. */
		dw = ds;
		nver = ver[dw]; nqe = qe[dw]; nqv = qv[dw]; nlg = lg[dw]; nquor = quor[dw];
#ifdef CONFIG_AT_CONFCHG
		if
		:: !synced[dw] ->   /* a synced winner already applied it */
#endif
			nver++;
			nquor = (dn >= MAJ);
			if
			:: nquor ->
#ifdef LOCAL_EPOCH
				nqe++;
#else
				nqe = cep[c];
#endif
				QV_STEP(nqv, nver);
				skip
			:: else
			fi;
#ifdef CONFIG_AT_CONFCHG
		:: else
		fi;
#endif
		dj = 0;
		do
		:: dj < N ->
			if
			:: (X & (1 << dj)) && inr[dj] ->
				assert(offered[dj] == M);
				ver[dj] = nver; qe[dj] = nqe; qv[dj] = nqv; lg[dj] = nlg; quor[dj] = nquor;
				cfgv[dj] = nver;
				synced[dj] = 1; inr[dj] = 0;
				if
				:: dj != dw ->
					/* another node's history: the disk and what this
					 * node's clients wait for refer to the old one */
					pval[dj] = 0;
#if defined(REBASE_PENDING)
					/* requests_on_replaced: kept if the state that won holds
					 * it, then durable once that state is */
					ai = 0;
					do
					:: ai < CH ->
						if
						:: orig[ai] == dj && pend[ai] > 0 ->
							if :: nlg & (1 << ai) -> pend[ai] = nver :: else -> pend[ai] = 0 fi
						:: else
						fi;
						ai++
					:: else -> break
					od;
#elif !defined(KEEP_PENDING)
					ai = 0;
					do
					:: ai < CH -> if :: orig[ai] == dj -> pend[ai] = 0 :: else fi; ai++
					:: else -> break
					od;
#endif
					skip
				:: else
				fi;
				apply_queue(dj)
			:: else
			fi;
			dj++
		:: else -> break
		od
	:: dt == M_CHANGE ->
		dj = 0;
		do
		:: dj < N ->
			if
			:: (X & (1 << dj)) && inr[dj] -> enqueue(dj, dp)
			:: (X & (1 << dj)) && !inr[dj] && synced[dj] -> apply_change(dj, dp)
			:: else   /* unsynced, no round: dropped */
			fi;
			dj++
		:: else -> break
		od
	fi
}

/* A new configuration: the members M (comp[] set, its order empty) run
 * replica_confchg. joined: someone joined (a merge or a restart). */
inline confchg(M, joined) {
	popcount(M, tn);
	lowest(M, tc);
	if
	:: tn >= MAJ -> gq++; cep[tc] = gq   /* a quorate configuration's number */
	:: else
	fi;
	bi = 0;
	do
	:: bi < N ->
		if
		:: M & (1 << bi) ->
			tint = inr[bi];
			if
			:: tint ->
#ifdef CONFIG_AT_CONFCHG
				/* brief: a synced replica applies what it queued, an
				 * unsynced one drops it */
				if :: synced[bi] -> apply_queue(bi) :: else -> rq[bi] = 0 fi;
#else
				/* the interrupted round's configuration was never applied:
				 * its queue is dropped everywhere (not acknowledged) */
				rq[bi] = 0;
#endif
				inr[bi] = 0
			:: else
			fi;
#ifdef PRECONFIG_OFFER
			oqe[bi] = qe[bi]; oqv[bi] = qv[bi]; ovr[bi] = ver[bi];
#endif
#ifdef CONFIG_AT_CONFCHG
			if :: synced[bi] -> apply_config(bi, tc, tn) :: else fi;
#endif
			if
			:: synced[bi] && !joined && !tint ->
				/* nothing to sync: the members come from one configuration */
#ifndef CONFIG_AT_CONFCHG
				apply_config(bi, tc, tn);
#endif
				skip
			:: else ->
				/* a round: offer, then queue state messages until the state */
				inr[bi] = 1; offered[bi] = 0; ssent[bi] = 0;
				bcast(tc, MSG(M_OFFER, bi, 0))
			fi
		:: else
		fi;
		bi++
	:: else -> break
	od;
	/* The offers are the first messages of the new configuration; they are
	 * delivered here, in the same step. Nothing can tell the difference: a
	 * configuration change before the last offer arrives ends the round just
	 * as one right after it does. */
	do
	:: mlen[tc] > 0 && MTYPE(mq[tc * QMAX]) == M_OFFER -> deliver(tc, M, M)
	:: else -> break
	od
}

/* Replaying a trail (spin -t) prints each event and every node after it;
 * the verifier prints nothing. */
inline dump_nodes() {
	mi = 0;
	do
	:: mi < N ->
		if
		:: comp[mi] == DEAD ->
			printf("   n%d dead; disk: v%d e%d qv%d log%d\n", mi, pver[mi], pqe[mi], pqv[mi], plg[mi])
		:: else ->
			printf("   n%d conf%d synced%d round%d: v%d e%d qv%d log%d quorate%d; disk: v%d e%d qv%d log%d current%d\n",
			       mi, comp[mi], synced[mi], inr[mi], ver[mi], qe[mi], qv[mi], lg[mi], quor[mi],
			       pver[mi], pqe[mi], pqv[mi], plg[mi], pval[mi])
		fi;
		mi++
	:: else -> break
	od;
	printf("   acknowledged changes (mask): %d\n", ackd)
}

/* The properties, after every event. */
inline check_invariants() {
	tq = 0;
	ti = 0;
	do
	:: ti < N ->
		if
		:: comp[ti] == ti ->
			members(ti, tmask); popcount(tmask, tn);
			if :: tn >= MAJ -> tq++ :: else fi
		:: else -> assert(mlen[ti] == 0)
		fi;
		if
		:: comp[ti] != DEAD && synced[ti] && !inr[ti] ->
			members(comp[ti], tmask); popcount(tmask, tn);
			/* a settled replica's quorate flag is its configuration's */
			assert(quor[ti] == (tn >= MAJ));
			/* 1. No acknowledged change lost: a synced, settled replica
			 * in a quorate configuration contains every one. */
			if
			:: quor[ti] -> assert((lg[ti] & ackd) == ackd)
			:: else
			fi;
			/* 2. Agreement: synced, settled members of one configuration
			 * (they delivered the same events) have the same state. */
			tj = ti + 1;
			do
			:: tj < N ->
				if
				:: comp[tj] == comp[ti] && synced[tj] && !inr[tj] ->
					assert(ver[tj] == ver[ti] && qe[tj] == qe[ti] && qv[tj] == qv[ti] &&
					       lg[tj] == lg[ti] && quor[tj] == quor[ti])
				:: else
				fi;
				tj++
			:: else -> break
			od
		:: else
		fi;
		assert(ver[ti] < 32);   /* fits a report's payload */
		ti++
	:: else -> break
	od;
	/* 3. At most one quorate configuration at a time. */
	assert(tq <= 1)
}

inline crash_node(i) {
	comp[i] = DEAD;
	synced[i] = 0; inr[i] = 0; offered[i] = 0; ssent[i] = 0; rq[i] = 0; cfgv[i] = 0;
#ifdef PRECONFIG_OFFER
	oqe[i] = 0; oqv[i] = 0; ovr[i] = 0;
#endif
	ver[i] = 0; qe[i] = 0; qv[i] = 0; lg[i] = 0; quor[i] = 0;
	aj = 0;
	do :: aj < CH -> if :: orig[aj] == i -> pend[aj] = 0 :: else fi; aj++ :: else -> break od
}

/* ---------------------------------------------------------------------
 * Events. The loop in `world` picks one: a guard (generated for every node,
 * configuration or pair by the preprocessor: FOR_NODES, FOR_PAIRS) names its
 * kind and arguments, then one d_step (dispatch) does it, in the same atomic
 * step. Every event's code exists once, and so does replica_confchg's: an
 * event only says which configurations to announce (cm[], cj[]).
 * ------------------------------------------------------------------- */
#if N == 3
#define FOR_NODES(X) X(0) X(1) X(2)
#define FOR_PAIRS(X) X(0, 1) X(0, 2) X(1, 2)
#define FOR_SUBSETS(X) X(1) X(2) X(3) X(4) X(5) X(6)
#define SIZE(C) ((comp[0] == (C)) + (comp[1] == (C)) + (comp[2] == (C)))
#elif N == 5
#define FOR_NODES(X) X(0) X(1) X(2) X(3) X(4)
#define FOR_PAIRS(X) X(0, 1) X(0, 2) X(0, 3) X(0, 4) X(1, 2) X(1, 3) X(1, 4) X(2, 3) X(2, 4) X(3, 4)
#define FOR_SUBSETS(X) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) \
	X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) \
	X(28) X(29) X(30)
#define SIZE(C) ((comp[0] == (C)) + (comp[1] == (C)) + (comp[2] == (C)) + (comp[3] == (C)) + \
                 (comp[4] == (C)))
#else
#error "N must be 3 or 5"
#endif

#define E_DELIVER 1
#define E_CHANGE  2
#define E_FSYNC   3
#define E_CRASH   4
#define E_RESTART 5
#define E_INTO    6
#define E_LEAVE   7
#define E_MERGE   8
#define E_POWER   9
#define E_SPLIT   10
byte ek, ea, eb;       /* the event: kind, arguments (temporaries) */
int eused;             /* canonical(): epochs in use */
byte cm[2];            /* configurations to announce after it: members ... */
bool cj[2];            /* ... and whether someone joined */
byte ck;

/* CPG delivers the next message of configuration C to all its members. */
#define G_DELIVER(C) :: mlen[C] > 0 -> ek = E_DELIVER; ea = C

/* A client change K at node I: only from a synced, settled, quorate
 * replica (the agent refuses changes otherwise), each change once. */
#define G_CHANGE(K, I, AFTER) \
	:: !sent[K] && AFTER && comp[I] != DEAD && synced[I] && !inr[I] && quor[I] && \
	   mlen[comp[I]] < QMAX - 1 -> ek = E_CHANGE; ea = I; eb = K
#define G_CHANGE0(I) G_CHANGE(0, I, true)
#if CH > 1
#define G_CHANGE1(I) G_CHANGE(1, I, sent[0])
#else
#define G_CHANGE1(I)
#endif

/* Node I's journal is fsynced: its disk catches up with its memory. In the
 * fixed protocol a replica's state does not change during a round, so an
 * fsync in a round writes what an fsync just before it would have: left
 * out. With CONFIG_AT_CONFCHG the state changes at the configuration change
 * and an fsync in the round matters. */
#ifdef CONFIG_AT_CONFCHG
#define FSYNC_OK(I) true
#else
#define FSYNC_OK(I) (!inr[I])
#endif
#define DISK_BEHIND(I) (pver[I] != ver[I] || pqe[I] != qe[I] || pqv[I] != qv[I] || \
                        plg[I] != lg[I] || !pval[I])
#define G_FSYNC(I) :: comp[I] != DEAD && FSYNC_OK(I) && DISK_BEHIND(I) -> ek = E_FSYNC; ea = I
inline fsync_node(i) {
	pver[i] = ver[i]; pqe[i] = qe[i]; pqv[i] = qv[i]; plg[i] = lg[i];
	pval[i] = 1
}

/* Node I crashes: its memory is gone, its disk stays. */
#define G_CRASH(I) :: ev < EVMAX && comp[I] != DEAD -> ek = E_CRASH; ea = I

/* Node I restarts from its disk, unsynced: alone (merges then bring it to
 * the others) or, with RESTART_INTO, straight into configuration C. */
#define G_RESTART(I) :: comp[I] == DEAD -> ek = E_RESTART; ea = I
#define G_INTO(I, C) :: comp[I] == DEAD && comp[C] == C -> ek = E_INTO; ea = I; eb = C
#define G_INTO_PAIR(A, B) G_INTO(A, B) G_INTO(B, A)

/* A round that does not complete in time: node I leaves the group (its copy
 * is no longer the agreed one: unsynced) and joins again, alone. */
#define G_LEAVE(I) :: ev < EVMAX && comp[I] != DEAD && inr[I] -> ek = E_LEAVE; ea = I

/* Configurations A and B merge: one configuration change for all, with
 * `joined` non-empty on both sides. */
#define G_MERGE(A, B) :: ev < EVMAX && comp[A] == A && comp[B] == B -> ek = E_MERGE; ea = A; eb = B

/* Configuration C splits into S (which holds C, its lowest member) and the
 * rest; see the split in `world`. */
#define G_SPLIT(C) :: ev < EVMAX && comp[C] == C && SIZE(C) >= 2 -> ek = E_SPLIT; ea = C
/* S: members of configuration ea (tmask) holding ea, not all of them */
#define SPLIT_SIDE(X) :: ((X) & tmask) == (X) && (X) != tmask && ((X) & (1 << ea)) -> tx = X

/* During a split, after a delivery on one side only: node I on that side
 * fsyncs (and with the others there exchanges `persisted` reports), still
 * in the old configuration. */
#define SPLIT_FSYNC(I) \
	:: tint && (tside & (1 << I)) && FSYNC_OK(I) && DISK_BEHIND(I) -> \
		d_step { printf("EV   (splitting) n%d fsyncs\n", I); fsync_node(I); check_acks() }; \
		skip

inline restart_node(i) {
	ver[i] = pver[i]; qe[i] = pqe[i]; qv[i] = pqv[i]; lg[i] = plg[i]; quor[i] = 0;
	pval[i] = 1; synced[i] = 0
}

#ifdef CONFIG_AT_CONFCHG
#define LEAVE_QUEUE(I) if :: synced[I] -> apply_queue(I) :: else -> rq[I] = 0 fi
#else
#define LEAVE_QUEUE(I) rq[I] = 0
#endif

/* Two states that differ only where nothing will ever look are made equal
 * (fewer states, the same behaviours):
 *   - cfgv is read only for an origin that waits (DISK_OK): zero elsewhere
 *     once every change was sent;
 *   - epochs (fixed protocol) are only compared, and a new one is above all:
 *     renumbered 1, 2, ... in order, gq the highest. */
inline canonical() {
	ti = 0;
	do
	:: ti < N ->
		tx = 0;
		ai = 0;
		do
		:: ai < CH -> if :: !sent[ai] || (orig[ai] == ti && pend[ai] > 0) -> tx = 1 :: else fi; ai++
		:: else -> break
		od;
		if :: !tx -> cfgv[ti] = 0 :: else fi;
		ti++
	:: else -> break
	od;
#ifndef LOCAL_EPOCH
	/* the epochs in use (bit e); renumbered only if there is a gap */
	eused = 0;
	ti = 0;
	do
	:: ti < N -> eused = eused | (1 << qe[ti]) | (1 << pqe[ti]) | (1 << cep[ti]); ti++
	:: else -> break
	od;
	eused = eused & ~1;
	/* tn: the next rank; tk: the epoch value looked at */
	tn = 0; tk = 1;
	do
	:: eused == (1 << (gq + 1)) - 2 -> tn = gq; break   /* 1..gq all in use */
	:: tk <= gq && eused != (1 << (gq + 1)) - 2 ->
		tx = 0;
		ti = 0;
		do
		:: ti < N -> if :: qe[ti] == tk || pqe[ti] == tk || cep[ti] == tk -> tx = 1 :: else fi; ti++
		:: else -> break
		od;
		if
		:: tx ->
			tn++;
			ti = 0;
			do
			:: ti < N ->
				if :: qe[ti] == tk -> qe[ti] = tn :: else fi;
				if :: pqe[ti] == tk -> pqe[ti] = tn :: else fi;
				if :: cep[ti] == tk -> cep[ti] = tn :: else fi;
				ti++
			:: else -> break
			od
		:: else
		fi;
		tk++
	:: else -> break
	od;
	gq = tn;
	eused = 0
#endif
}

/* The chosen event (ek, ea, eb); the split's members S are in tx. */
inline dispatch() {
	if
	:: ek == E_DELIVER ->
		printf("EV deliver in conf%d: type %d from n%d, payload %d\n", ea,
		       MTYPE(mq[ea * QMAX]), MSND(mq[ea * QMAX]), MPAY(mq[ea * QMAX]));
		members(ea, tmask); deliver(ea, tmask, tmask)
	:: ek == E_CHANGE ->
		printf("EV n%d broadcasts client change %d\n", ea, eb);
		sent[eb] = 1; orig[eb] = ea; bcast(comp[ea], MSG(M_CHANGE, ea, eb))
	:: ek == E_FSYNC ->
		printf("EV n%d fsyncs\n", ea);
		fsync_node(ea)
	:: ek == E_CRASH ->
		printf("EV n%d crashes\n", ea);
		ev++;
		tc = comp[ea]; members(tc, tmask); drop_msgs(tc);
		crash_node(ea);
		cm[0] = tmask ^ (1 << ea)
	:: ek == E_RESTART ->
		printf("EV n%d restarts from its disk, alone\n", ea);
		restart_node(ea);
		comp[ea] = ea; cm[0] = 1 << ea; cj[0] = 1
	:: ek == E_INTO ->
		printf("EV n%d restarts from its disk and joins conf%d\n", ea, eb);
		restart_node(ea);
		drop_msgs(eb);
		members(eb, tmask); cm[0] = tmask | (1 << ea); cj[0] = 1
	:: ek == E_LEAVE ->
		printf("EV n%d: round timeout; it leaves and rejoins\n", ea);
		ev++;
		tc = comp[ea]; members(tc, tmask); drop_msgs(tc);
		LEAVE_QUEUE(ea); inr[ea] = 0; synced[ea] = 0;
		cm[0] = tmask ^ (1 << ea);
		comp[ea] = ea; cm[1] = 1 << ea; cj[1] = 1
	:: ek == E_MERGE ->
		printf("EV conf%d and conf%d merge\n", ea, eb);
		ev++;
		drop_msgs(ea); drop_msgs(eb);
		members(ea, tmask); members(eb, tx);
		cm[0] = tmask | tx; cj[0] = 1
	:: ek == E_POWER ->
		printf("EV power loss: every node crashes\n");
		ev++;
		ti = 0;
		do
		:: ti < N -> drop_msgs(ti); if :: comp[ti] != DEAD -> crash_node(ti) :: else fi; ti++
		:: else -> break
		od
	:: ek == E_SPLIT ->
		printf("EV conf%d splits into %d | %d (member masks)\n", ea, tx, tmask ^ tx);
		ev++;
		drop_msgs(ea);
		cm[0] = tx; cm[1] = tmask ^ tx
	fi;
	/* replica_confchg for the configurations it formed */
	ck = 0;
	do
	:: ck < 2 ->
		if
		:: cm[ck] != 0 -> set_comp(cm[ck]); confchg(cm[ck], cj[ck])
		:: else
		fi;
		ck++
	:: else -> break
	od;
	check_acks(); dump_nodes(); check_invariants();
	canonical();
	ek = 0; ea = 0; eb = 0; cm[0] = 0; cm[1] = 0; cj[0] = 0; cj[1] = 0; ck = 0;
	reset_tmp()
}

active proctype world()
{
	/* Start: all nodes in one quorate configuration, synced, equal, all of
	 * it on disk. */
	d_step {
		gq = 1; cep[0] = 1;
		ti = 0;
		do
		:: ti < N ->
			comp[ti] = 0; synced[ti] = 1; ver[ti] = 1; qe[ti] = 1; quor[ti] = 1; cfgv[ti] = 1;
			pver[ti] = 1; pqe[ti] = 1; pval[ti] = 1;
#ifndef ORDER_BY_VERSION
			qv[ti] = 1; pqv[ti] = 1;
#endif
			ti++
		:: else -> break
		od;
		reset_tmp()
	};
end:
	do
	:: atomic {
		if
		FOR_NODES(G_DELIVER)
		FOR_NODES(G_CHANGE0)
		FOR_NODES(G_CHANGE1)
		FOR_NODES(G_FSYNC)
		FOR_NODES(G_CRASH)
		FOR_NODES(G_RESTART)
#ifdef RESTART_INTO
		FOR_PAIRS(G_INTO_PAIR)
#endif
		FOR_NODES(G_LEAVE)
		FOR_PAIRS(G_MERGE)
		:: ev < EVMAX -> ek = E_POWER
		FOR_NODES(G_SPLIT)
		fi;
		if
		:: ek == E_SPLIT ->
			/* CPG's agreed, not safe, delivery: messages still undelivered may first be
			 * delivered in the old configuration on one side only, their
			 * senders' side, in order; the rest are lost */
			members(ea, tmask);
			if FOR_SUBSETS(SPLIT_SIDE) fi;
			if :: tside = tx :: tside = tmask ^ tx fi;
			do
			:: mlen[ea] > 0 && (tside & (1 << MSND(mq[ea * QMAX]))) ->
				d_step {
					printf("EV conf%d splitting: delivered on side %d only: type %d from n%d, payload %d\n",
					       ea, tside, MTYPE(mq[ea * QMAX]), MSND(mq[ea * QMAX]), MPAY(mq[ea * QMAX]));
					deliver(ea, tside, tmask);
					tint = 1;
					check_acks()
				};
				skip
			FOR_NODES(SPLIT_FSYNC)
			:: true -> break
			od
		:: else
		fi;
		d_step { dispatch() }
	   }
	od
}
