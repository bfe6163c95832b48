/* Model 2: the migration handover (agent/local_vms.c, migrate/source.c,
 * migrate/incoming.c, and the migration messages of ha/state_apply.c).
 * docs/cluster-state.md, "The model", says what it covers, what it leaves
 * out and how to run it; tests/model/run-models.sh checks it in `make test`.
 *
 * Three hosts: S (the source, 0), D (the destination, 1) and T (2), a third
 * host that is only a vote and a replica. One VM migrates from S to D. One
 * process, `world`, plays everything; each iteration of its loop is one
 * atomic step of one actor:
 *   - CPG: deliver the next message of a configuration to its members (each
 *     applies it: cl_state_apply); split the cluster (T goes with one side);
 *     heal it; an agent's crash (its host leaves the group) and restart;
 *   - the source agent (srcA) and the destination agent (dstA): guarded
 *     actions reading their replica and their VMM, as local_vms.c does after
 *     every applied message and in local_reconcile (level-triggered);
 *   - the source VMM (sV) and the destination VMM (dV) and the migration
 *     stream between them (two FIFOs the adversary can break);
 *   - the adversary, within budgets: split, crash an agent, kill a VMM, break
 *     the stream.
 * Properties: (a), (b), (c) are assertions after every step; (d) is checked
 * in every terminal state (nothing left to do: heals and agent restarts are
 * always possible, so a terminal state has the cluster whole and every agent
 * up; the adversary's budget is finite, and it may stop at any time, so
 * every fair run ends in one).
 *
 * The default is the protocol the model shows to be safe; it differs from
 * spec/model-brief.md (and local_vms.c) in three points, each with a switch
 * restoring the brief:
 *   COMMIT_ON_APPLY        the source agent tells its VMM migrate-commit as soon
 *                          as its replica applied migration_commit (brief).
 *                          Fixed: only once the commit is stable (acknowledged:
 *                          its replica is synced in a quorate configuration that
 *                          holds it, i.e. a majority persisted it). spin: (d).
 *   KILL_WHEN_NOT_QUORATE  an agent kills a VMM that holds the guest (a source
 *                          VMM; a destination VMM with the complete state) when
 *                          its replica says the VM is another host's, even in a
 *                          non-quorate configuration (brief: local_reconcile on
 *                          any state). Fixed: only in a quorate one, whose
 *                          state is stable. An incoming VMM still receiving is
 *                          killed at once either way. spin: (d).
 *   BRIEF_HANDOVER         both.
 *   ONE_SHOT_SENDS         an agent broadcasts migration_listening, _commit,
 *                          _done and _abort once (local_vms.c's mig_*_sent
 *                          flags); a configuration change that loses one leaves
 *                          the migration unfinished for ever. Fixed: the flags
 *                          are cleared at every configuration change of the
 *                          agent's configuration. spin: (d).
 * and two switches that break the protocol on purpose:
 *   OLD_DEST_RUNS_ON_SOURCE_COMMIT  the destination VMM also runs on the
 *                          source's COMMIT record (the bug issue 11 fixes).
 *                          spin: (c).
 *   RESUME_IF_GONE         a source paused in `ready` whose migration is gone
 *                          resumes whoever the state names as owner (without
 *                          the "ONLY if owned by this host" rule). spin: (a).
 * Budgets: SPLITS (default 1), AGENT_CRASHES (2), VMM_KILLS (1), STREAM_BREAKS (1).
 */

#define S 0
#define D 1
#define T 2
#define N 3
#define MAJ 2
#define DEAD 255               /* comp[] of a host whose agent is down */
#define QMAX 3

#ifndef SPLITS
#define SPLITS 1
#endif
#ifndef AGENT_CRASHES
#define AGENT_CRASHES 2
#endif
#ifndef VMM_KILLS
#define VMM_KILLS 1
#endif
#ifndef STREAM_BREAKS
#define STREAM_BREAKS 1
#endif

#ifdef BRIEF_HANDOVER
#define COMMIT_ON_APPLY
#define KILL_WHEN_NOT_QUORATE
#endif

/* The switches, as conditions of the agents' actions (below) */
#ifdef COMMIT_ON_APPLY
#define COMMIT_STABLE(h) true
#else
#define COMMIT_STABLE(h) QUORATE(h)   /* synced in a quorate configuration holding it */
#endif
#ifdef KILL_WHEN_NOT_QUORATE
#define READY_KILL_OK(h) true
#else
#define READY_KILL_OK(h) QUORATE(h)
#endif
#ifdef ONE_SHOT_SENDS
#define RESEND_AFTER_CONFCHG(M) skip
#else
#define RESEND_AFTER_CONFCHG(M) \
	if :: (M) & (1 << S) -> s_csent = 0; s_asent = 0 :: else fi; \
	if :: (M) & (1 << D) -> d_lsent = 0; d_dsent = 0; d_asent = 0 :: else fi
#endif
#ifdef RESUME_IF_GONE
#define RESUME_OWNER_OK(h) true
#else
#define RESUME_OWNER_OK(h) (own[h] == h)
#endif

/* Cluster messages (sender in the message): type*4 + sender */
#define C_LISTENING 1          /* migration_listening, from D */
#define C_COMMIT    2          /* migration_commit, from S */
#define C_DONE      3          /* migration_done, from D */
#define C_ABORT     4          /* migration_abort, from S or D */
#define CMSG(t, s) ((t) * 4 + (s))
#define CTYPE(m) ((m) / 4)
#define CSND(m) ((m) % 4)

/* The migration in a replica's state */
#define P_NONE   0             /* no migration: it ended (done, aborted, failed) */
#define P_PREP   1             /* migration_begin applied: preparing */
#define P_LISTEN 2             /* migration_listening applied */
#define P_COMMIT 3             /* migration_commit applied: owner = D */

/* Source VMM (migrate/source.c with --commit-gate) */
#define SV_RUN    0            /* the guest runs here, no migration */
#define SV_MIG    1            /* pre-copy rounds: the guest runs here */
#define SV_PAUSED 2            /* stop-and-copy: paused, END sent, waiting READY */
#define SV_READY  3            /* phase "ready": paused, waits for its agent */
#define SV_COMMIT 4            /* told to commit (or RUNNING came): never runs again */
#define SV_DEAD   5

/* Destination VMM (migrate/incoming.c, `run --incoming --commit-gate`) */
#define DV_NONE    0           /* not started */
#define DV_WAIT    1           /* listening / receiving: paused, gated */
#define DV_READY   2           /* READY sent: waits for the decision */
#define DV_RUNNING 3           /* the guest runs here */
#define DV_DEAD    4

/* Migration stream records */
#define R_END     1            /* source -> destination: the rest of the state, END */
#define R_COMMIT  2            /* source -> destination */
#define R_READY   3            /* destination -> source */
#define R_RUNNING 4            /* destination -> source */
#define R_ERROR   5            /* either way: this side gave up */

/* --- CPG --- */
byte comp[N];        /* the configuration a host's agent is in (its lowest member); DEAD */
byte mq[N * QMAX];   /* undelivered messages of each configuration, in order */
byte mlen[N];
byte gq;             /* the last quorate configuration's number (model 1: unique epochs) */

/* --- each host's replica --- */
bool syn[N];         /* synced (a restarted agent alone is not) */
byte own[N];         /* the VM's owner: S or D */
byte ph[N];          /* the migration's phase */
byte qe[N];          /* q_epoch (model 1's fixed rule) */
byte qv[N];          /* q_version: events applied while quorate */

/* --- agents: up, and what they remember (volatile) --- */
bool up[2];
bool s_started;      /* srcA asked sV to migrate (lv->mig_started) */
bool s_csent;        /* srcA broadcast migration_commit (lv->mig_commit_sent) */
bool s_asent;        /* srcA broadcast migration_abort */
bool d_lsent;        /* dstA broadcast migration_listening */
bool d_dsent;        /* dstA broadcast migration_done */
bool d_asent;        /* dstA broadcast migration_abort */

/* --- VMMs and the stream --- */
byte srcvm;             /* source VMM */
byte dstvm;             /* destination VMM */
bool s_failed;       /* sV's migration outcome: failed (it resumed on its own) */
bool sok;            /* the stream is up */
byte s2d[2]; byte n_s2d;   /* records in flight, source -> destination */
byte d2s[2]; byte n_d2s;   /* records in flight, destination -> source */

/* --- adversary budgets, ghosts --- */
byte splits, acrashes, vkills, sbreaks;
bool adv_done;             /* the adversary stopped (so that runs can end before
                            * its budget is spent) */
bool s_killed, d_killed;   /* the adversary killed that VMM */
bool d_told;               /* dstA told dV migrate-commit, its replica holding the commit */
/* (d), in the terminal state: named so that spin's report says which */
bool d_not_settled, d_vm_stuck, d_migration_open;

byte ti, tk, tm, tw, tmask, tside, tn, mi, dj;
byte dmsg, dt, ds, dmask, dn;
byte wown, wph, wqe, wqv;

inline reset_tmp() {
	ti = 0; tk = 0; tm = 0; tw = 0; tmask = 0; tside = 0; tn = 0; mi = 0; dj = 0;
	dmsg = 0; dt = 0; ds = 0; dmask = 0; dn = 0; wown = 0; wph = 0; wqe = 0; wqv = 0
}

/* Configurations are named 0..2 (the name picks their message order);
 * res = a name no host uses. */
#define LABEL_USED(l) (comp[0] == (l) || comp[1] == (l) || comp[2] == (l))
inline free_label(res) {
	res = (!LABEL_USED(0) -> 0 : (!LABEL_USED(1) -> 1 : 2))
}

inline members(c, res) {
	res = 0; mi = 0;
	do
	:: mi < N -> if :: comp[mi] == c -> res = res | (1 << mi) :: else fi; mi++
	:: else -> break
	od
}

inline popcount(mask, res) {
	res = 0; mi = 0;
	do
	:: mi < N -> if :: mask & (1 << mi) -> res++ :: else fi; mi++
	:: else -> break
	od
}

inline lowest(mask, res) {
	mi = 0;
	do
	:: mask & (1 << mi) -> break
	:: else -> mi++
	od;
	res = mi
}

#define QUORATE(h) (comp[h] != DEAD && conf_size(comp[h]) >= MAJ)
#define conf_size(c) ((comp[0] == (c)) + (comp[1] == (c)) + (comp[2] == (c)))

inline bcast(c, m) {
	assert(mlen[c] < QMAX);
	mq[c * QMAX + mlen[c]] = m;
	mlen[c]++
}

inline drop_msgs(c) {
	mi = 0;
	do
	:: mi < mlen[c] -> mq[c * QMAX + mi] = 0; mi++
	:: else -> break
	od;
	mlen[c] = 0
}

/* A broadcast by host h's agent, in its configuration. */
inline send(h, t) {
	bcast(comp[h], CMSG(t, h))
}

/* Stream records (lost if the stream is down). */
inline to_dst(r) {
	if
	:: sok && n_s2d < 2 -> s2d[n_s2d] = r; n_s2d++
	:: else
	fi
}
inline to_src(r) {
	if
	:: sok && n_d2s < 2 -> d2s[n_d2s] = r; n_d2s++
	:: else
	fi
}
inline pop_s2d() { s2d[0] = s2d[1]; s2d[1] = 0; n_s2d-- }
inline pop_d2s() { d2s[0] = d2s[1]; d2s[1] = 0; n_d2s-- }

/* --- cl_state_apply on replica h, in a configuration quorate or not (q) --- */
inline apply_msg(h, t, snd, q) {
	if
	:: t == C_LISTENING && snd == D && ph[h] == P_PREP ->
		ph[h] = P_LISTEN; if :: q -> qv[h]++ :: else fi
	:: t == C_COMMIT && snd == S && ph[h] == P_LISTEN && q ->
		/* refused in a non-quorate configuration */
		ph[h] = P_COMMIT; own[h] = D; qv[h]++
	:: t == C_DONE && snd == D && ph[h] == P_COMMIT ->
		ph[h] = P_NONE; if :: q -> qv[h]++ :: else fi
	:: t == C_ABORT && (ph[h] == P_PREP || ph[h] == P_LISTEN) ->
		/* refused once committed */
		ph[h] = P_NONE; own[h] = S; if :: q -> qv[h]++ :: else fi
	:: else   /* refused: no effect */
	fi
}

/* cl_state_apply_config on replica h for members M (n of them): an
 * uncommitted migration whose `from` or `to` is missing ends as failed; a
 * committed one stays (the VM is `lost` while D is away: not modelled). */
inline apply_config(h, M, n) {
	if
	:: (ph[h] == P_PREP || ph[h] == P_LISTEN) && (!(M & (1 << S)) || !(M & (1 << D))) ->
		ph[h] = P_NONE; own[h] = S
	:: else
	fi;
	if :: n >= MAJ -> qe[h] = gq; qv[h]++ :: else fi
}

/* A configuration change for the members M (comp[] set, order empty).
 * joined: a merge. Then the replicas sync (model 1's fixed rule, one step
 * here: the member with the highest (q_epoch, q_version), then the lowest
 * id, wins; an unsynced winner alone is no winner) and the configuration is
 * applied to the agreed state. Without a join, synced members apply it. */
inline confchg(M, joined) {
	/* What an agent broadcast in its old configuration and was not delivered
	 * there is lost: it sends again what is still needed. */
	RESEND_AFTER_CONFCHG(M);
	popcount(M, tn);
	if :: tn >= MAJ -> gq++ :: else fi;
	if
	:: joined ->
		tw = 255; mi = 0;
		do
		:: mi < N ->
			if
			:: (M & (1 << mi)) && (tw == 255 || qe[mi] > qe[tw] ||
			                      (qe[mi] == qe[tw] && qv[mi] > qv[tw])) -> tw = mi
			:: else
			fi;
			mi++
		:: else -> break
		od;
		if
		:: !syn[tw] && tn < MAJ -> skip   /* no winner: stays unsynced */
		:: else ->
			wown = own[tw]; wph = ph[tw]; wqe = qe[tw]; wqv = qv[tw];
			dj = 0;
			do
			:: dj < N ->
				if
				:: (M & (1 << dj)) ->
					own[dj] = wown; ph[dj] = wph; qe[dj] = wqe; qv[dj] = wqv;
					syn[dj] = 1;
					apply_config(dj, M, tn)
				:: else
				fi;
				dj++
			:: else -> break
			od
		fi
	:: else ->
		dj = 0;
		do
		:: dj < N -> if :: (M & (1 << dj)) && syn[dj] -> apply_config(dj, M, tn) :: else fi; dj++
		:: else -> break
		od
	fi
}

/* The head message of configuration c to the members in X. */
inline deliver(c, X) {
	members(c, dmask); popcount(dmask, dn);
	dmsg = mq[c * QMAX];
	mq[c * QMAX] = mq[c * QMAX + 1]; mq[c * QMAX + 1] = mq[c * QMAX + 2]; mq[c * QMAX + 2] = 0;
	mlen[c]--;
	dt = CTYPE(dmsg); ds = CSND(dmsg);
	dj = 0;
	do
	:: dj < N -> if :: (X & (1 << dj)) && syn[dj] -> apply_msg(dj, dt, ds, dn >= MAJ) :: else fi; dj++
	:: else -> break
	od
}

inline agent_crash(h) {
	up[h] = 0;
	if
	:: h == S -> s_started = 0; s_csent = 0; s_asent = 0
	:: else -> d_lsent = 0; d_dsent = 0; d_asent = 0
	fi;
	tk = comp[h];
	members(tk, tmask);
	drop_msgs(tk);
	comp[h] = DEAD;
	syn[h] = 0;   /* its replica is its persisted copy until it syncs again */
	tmask = tmask ^ (1 << h);
	if
	:: tmask != 0 -> confchg(tmask, 0)   /* the others: same name, a new configuration */
	:: else
	fi
}

/* What the source VMM does when told migrate-abort / migrate-cancel in the
 * states where that resumes the guest (decide(): not after a commit). */
inline src_abort() {
	if
	:: srcvm == SV_READY -> to_dst(R_ERROR); srcvm = SV_RUN
	:: srcvm == SV_MIG || srcvm == SV_PAUSED -> to_dst(R_ERROR); srcvm = SV_RUN
	:: else
	fi
}

#define HEAL(A, B) \
	:: LABEL_USED(A) && LABEL_USED(B) -> d_step { \
		printf("EV heal: conf%d and conf%d merge\n", A, B); \
		drop_msgs(A); drop_msgs(B); \
		mi = 0; \
		do :: mi < N -> if :: comp[mi] == B -> comp[mi] = A :: else fi; mi++ \
		   :: else -> break od; \
		members(A, tmask); confchg(tmask, 1); \
		dump(); check(); reset_tmp() }

inline dump() {
	printf("   S: agent%d conf%d synced%d owner%d phase%d e%d qv%d | D: agent%d conf%d synced%d owner%d phase%d e%d qv%d | T: conf%d owner%d phase%d e%d qv%d\n",
	       up[S], comp[S], syn[S], own[S], ph[S], qe[S], qv[S],
	       up[D], comp[D], syn[D], own[D], ph[D], qe[D], qv[D],
	       comp[T], own[T], ph[T], qe[T], qv[T]);
	printf("   sV %d (0 run,1 mig,2 paused,3 ready,4 committed,5 dead)  dV %d (0 none,1 wait,2 ready,3 RUNNING,4 dead)  stream%d s2d %d,%d d2s %d,%d\n",
	       srcvm, dstvm, sok, s2d[0], s2d[1], d2s[0], d2s[1])
}

/* (a), (b), (c) after every step. */
inline check() {
	/* (a) never both VMMs running the guest */
	assert(!((srcvm == SV_RUN || srcvm == SV_MIG) && dstvm == DV_RUNNING));
	/* (b) every replica names one owner, the one its migration implies:
	 * from while uncommitted, to once committed */
	mi = 0;
	do
	:: mi < N ->
		assert(own[mi] == S || own[mi] == D);
		assert(!(ph[mi] == P_PREP || ph[mi] == P_LISTEN) || own[mi] == S);
		assert(ph[mi] != P_COMMIT || own[mi] == D);
		mi++
	:: else -> break
	od;
	/* and synced members of one configuration agree */
	assert(!(comp[S] != DEAD && comp[S] == comp[D] && syn[S] && syn[D]) ||
	       (own[S] == own[D] && ph[S] == ph[D]));
	/* (c) the destination runs the guest only after its agent saw the commit
	 * (applied in a quorate configuration) in its own replica */
	assert(dstvm != DV_RUNNING || d_told)
}

active proctype world()
{
	/* Start: migration_begin applied everywhere (quorate), the VM runs on S,
	 * every agent up and synced, the stream not yet connected. */
	d_step {
		gq = 1;
		ti = 0;
		do
		:: ti < N -> comp[ti] = 0; syn[ti] = 1; own[ti] = S; ph[ti] = P_PREP; qe[ti] = 1; ti++
		:: else -> break
		od;
		up[S] = 1; up[D] = 1;
		srcvm = SV_RUN; dstvm = DV_NONE; sok = 1;
		reset_tmp()
	};
	do
	/* ---------------- CPG ---------------- */
	:: mlen[0] > 0 -> d_step { printf("EV deliver in conf0: type %d from %d\n", CTYPE(mq[0]), CSND(mq[0]));
	                           members(0, tmask); deliver(0, tmask); dump(); check(); reset_tmp() }
	:: mlen[1] > 0 -> d_step { printf("EV deliver in conf1: type %d from %d\n", CTYPE(mq[QMAX]), CSND(mq[QMAX]));
	                           members(1, tmask); deliver(1, tmask); dump(); check(); reset_tmp() }
	:: mlen[2] > 0 -> d_step { printf("EV deliver in conf2: type %d from %d\n", CTYPE(mq[2 * QMAX]), CSND(mq[2 * QMAX]));
	                           members(2, tmask); deliver(2, tmask); dump(); check(); reset_tmp() }

	/* Split the whole cluster: S | D, T with one side. Agreed delivery:
	 * undelivered messages may first be delivered in the old configuration
	 * on one side only (their senders'); the rest are lost. */
	:: !adv_done && splits < SPLITS && comp[S] != DEAD && comp[S] == comp[D] && comp[T] == comp[S] -> atomic {
		tk = comp[S];                                       /* the old configuration */
		if :: tmask = (1 << S) | (1 << T) :: tmask = (1 << S) fi;   /* S's side */
		if :: tside = tmask :: tside = 7 ^ tmask fi;        /* the side that may deliver */
		do
		:: mlen[tk] > 0 && (tside & (1 << CSND(mq[tk * QMAX]))) ->
			d_step { printf("EV splitting: delivered on side %d only: type %d from %d\n", tside,
			                CTYPE(mq[tk * QMAX]), CSND(mq[tk * QMAX]));
			         deliver(tk, tside) };
			skip
		:: true -> break
		od;
		skip;
		d_step {
			printf("EV split: S's side %d | D's side %d\n", tmask, 7 ^ tmask);
			splits++;
			drop_msgs(tk);
			tside = 7 ^ tmask;
			comp[D] = (tk + 1) % 3;    /* D's side gets another name */
			if :: tside & (1 << T) -> comp[T] = comp[D] :: else fi;
			confchg(tmask, 0);
			confchg(tside, 0);
			dump(); check(); reset_tmp()
		}
	   }

	/* Heal: two configurations merge (always possible: partitions heal). */
	HEAL(0, 1) HEAL(0, 2) HEAL(1, 2)

	/* An agent crashes (its host leaves the group; its VMM lives on) and
	 * restarts (re-attaches to its VMM, unsynced, alone until a heal). */
	:: !adv_done && acrashes < AGENT_CRASHES && up[S] -> d_step {
		printf("EV the source agent crashes\n"); acrashes++; agent_crash(S); dump(); check(); reset_tmp() }
	:: !adv_done && acrashes < AGENT_CRASHES && up[D] -> d_step {
		printf("EV the destination agent crashes\n"); acrashes++; agent_crash(D); dump(); check(); reset_tmp() }
	:: !up[S] -> d_step {
		printf("EV the source agent restarts\n"); up[S] = 1;
		free_label(tm); comp[S] = tm; confchg(1 << S, 1); dump(); check(); reset_tmp() }
	:: !up[D] -> d_step {
		printf("EV the destination agent restarts\n"); up[D] = 1;
		free_label(tm); comp[D] = tm; confchg(1 << D, 1); dump(); check(); reset_tmp() }

	/* ---------------- the destination agent ---------------- */
	/* begin_incoming: migration_begin to this host: start the incoming VMM
	 * (paused, gated) and broadcast migration_listening (again if a
	 * configuration change lost it). */
	:: up[D] && syn[D] && ph[D] == P_PREP && (dstvm == DV_NONE || dstvm == DV_WAIT) && !d_lsent &&
	   mlen[comp[D]] < QMAX -> d_step {
		printf("EV dstA: begin_incoming: dV listens; migration_listening\n");
		if :: dstvm == DV_NONE -> dstvm = DV_WAIT :: else fi;
		d_lsent = 1; send(D, C_LISTENING); dump(); check(); reset_tmp() }
	/* on_commit / local_reconcile: the migration to this host is committed in
	 * its replica: migrate-commit on the control socket. Only this makes dV
	 * run the guest (migrate/incoming.c's gate). */
	:: up[D] && syn[D] && ph[D] == P_COMMIT && dstvm == DV_READY -> d_step {
		printf("EV dstA: on_commit: dV migrate-commit; the guest runs on D\n");
		d_told = 1; dstvm = DV_RUNNING; to_src(R_RUNNING); dump(); check(); reset_tmp() }
	/* destination_tick: the guest runs here: migration_done */
	:: up[D] && syn[D] && ph[D] == P_COMMIT && dstvm == DV_RUNNING && !d_dsent &&
	   mlen[comp[D]] < QMAX -> d_step {
		printf("EV dstA: migration_done\n");
		d_dsent = 1; send(D, C_DONE); dump(); check(); reset_tmp() }
	/* on_abort / local_reconcile: the migration to this host is gone (and the
	 * VM is S's): the incoming VMM is killed (migrate-abort). Fixed: one that
	 * holds the guest (READY, RUNNING) only in a quorate configuration. */
	:: up[D] && syn[D] && ph[D] == P_NONE && own[D] == S &&
	   (dstvm == DV_WAIT || ((dstvm == DV_READY || dstvm == DV_RUNNING) && READY_KILL_OK(D))) -> d_step {
		printf("EV dstA: the migration is gone: dV killed\n");
		if :: dstvm == DV_READY -> to_src(R_ERROR) :: else fi;
		dstvm = DV_DEAD; dump(); check(); reset_tmp() }
	/* process_ended / reconcile: no incoming VMM for an uncommitted migration
	 * to this host: migration_abort */
	:: up[D] && syn[D] && (ph[D] == P_PREP || ph[D] == P_LISTEN) && dstvm == DV_DEAD && !d_asent &&
	   mlen[comp[D]] < QMAX -> d_step {
		printf("EV dstA: dV ended: migration_abort\n");
		d_asent = 1; send(D, C_ABORT); dump(); check(); reset_tmp() }

	/* ---------------- the source agent ---------------- */
	/* start_sending: migration_listening applied: migrate with the gate */
	:: up[S] && syn[S] && ph[S] == P_LISTEN && srcvm == SV_RUN && !s_started && !s_failed -> d_step {
		printf("EV srcA: start_sending: sV migrates\n");
		s_started = 1; srcvm = SV_MIG; dump(); check(); reset_tmp() }
	/* source_tick: sV is in phase ready: migration_commit, only while quorate */
	:: up[S] && syn[S] && ph[S] == P_LISTEN && srcvm == SV_READY && QUORATE(S) && !s_csent &&
	   mlen[comp[S]] < QMAX -> d_step {
		printf("EV srcA: sV ready: migration_commit\n");
		s_csent = 1; send(S, C_COMMIT); dump(); check(); reset_tmp() }
	/* on_commit: migrate-commit to sV: COMMIT on the stream, never runs again.
	 * Fixed: only once the commit is stable (acknowledged by a majority). */
	:: up[S] && syn[S] && ph[S] == P_COMMIT && srcvm == SV_READY && COMMIT_STABLE(S) -> d_step {
		printf("EV srcA: on_commit: sV migrate-commit\n");
		srcvm = SV_COMMIT; to_dst(R_COMMIT); dump(); check(); reset_tmp() }
	/* source_tick / process_ended: sV's migration failed, or sV is gone,
	 * while the migration is uncommitted: migration_abort */
	:: up[S] && syn[S] && (ph[S] == P_PREP || ph[S] == P_LISTEN) && (s_failed || srcvm == SV_DEAD) &&
	   !s_asent && mlen[comp[S]] < QMAX -> d_step {
		printf("EV srcA: sV failed or ended: migration_abort\n");
		s_asent = 1; send(S, C_ABORT); dump(); check(); reset_tmp() }
	/* on_abort / local_reconcile: the migration is gone: resume a paused
	 * source, ONLY if the state says the VM is this host's. */
	:: up[S] && syn[S] && ph[S] == P_NONE && RESUME_OWNER_OK(S) &&
	   (srcvm == SV_MIG || srcvm == SV_PAUSED || srcvm == SV_READY) -> d_step {
		printf("EV srcA: the migration is gone: sV migrate-abort, the guest resumes on S\n");
		src_abort(); dump(); check(); reset_tmp() }
	/* local_reconcile: the state says the VM is D's: this copy must not run.
	 * Fixed: only on the state of a quorate configuration. */
	:: up[S] && syn[S] && own[S] == D && READY_KILL_OK(S) &&
	   (srcvm == SV_RUN || srcvm == SV_MIG || srcvm == SV_PAUSED || srcvm == SV_READY) -> d_step {
		printf("EV srcA: the VM belongs to D: sV killed\n");
		srcvm = SV_DEAD; dump(); check(); reset_tmp() }

	/* ---------------- the VMMs and the stream ---------------- */
	/* sV: pre-copy done: pause, send the rest and END */
	:: srcvm == SV_MIG && sok && dstvm == DV_WAIT -> d_step {
		printf("EV sV: paused, END sent\n");
		srcvm = SV_PAUSED; to_dst(R_END); dump(); check(); reset_tmp() }
	/* sV: the migration fails before READY (no connection, lost stream, the
	 * destination gave up): the guest resumes here */
	:: (srcvm == SV_MIG && (!sok || dstvm == DV_DEAD || dstvm == DV_NONE)) ||
	   (srcvm == SV_PAUSED && ((!sok && n_d2s == 0) || (n_d2s > 0 && d2s[0] == R_ERROR))) -> d_step {
		printf("EV sV: migration failed; the guest resumes on S\n");
		if :: n_d2s > 0 -> pop_d2s() :: else fi;
		srcvm = SV_RUN; s_failed = 1; dump(); check(); reset_tmp() }
	/* sV receives a record */
	:: n_d2s > 0 && !(srcvm == SV_PAUSED && d2s[0] == R_ERROR) -> d_step {
		printf("EV sV receives record %d\n", d2s[0]);
		if
		:: srcvm == SV_PAUSED && d2s[0] == R_READY -> srcvm = SV_READY   /* phase ready */
		:: srcvm == SV_READY && d2s[0] == R_RUNNING -> srcvm = SV_COMMIT /* as good as a commit */
		:: else   /* noted (an ERROR in phase ready: the agents decide) */
		fi;
		pop_d2s(); dump(); check(); reset_tmp() }
	/* dV receives a record */
	:: n_s2d > 0 -> d_step {
		printf("EV dV receives record %d\n", s2d[0]);
		if
		:: dstvm == DV_WAIT && s2d[0] == R_END -> dstvm = DV_READY; to_src(R_READY)
		:: dstvm == DV_WAIT && s2d[0] == R_ERROR -> dstvm = DV_DEAD
		:: dstvm == DV_READY && s2d[0] == R_ERROR -> dstvm = DV_DEAD   /* the source gave up */
#ifdef OLD_DEST_RUNS_ON_SOURCE_COMMIT
		:: dstvm == DV_READY && s2d[0] == R_COMMIT -> dstvm = DV_RUNNING; to_src(R_RUNNING)
#endif
		:: else   /* COMMIT: informational; the agent decides */
		fi;
		pop_s2d(); dump(); check(); reset_tmp() }
	/* dV: a lost stream before READY ends it (nothing runs) */
	:: dstvm == DV_WAIT && !sok && n_s2d == 0 -> d_step {
		printf("EV dV: stream lost before READY: it exits\n");
		dstvm = DV_DEAD; dump(); check(); reset_tmp() }

	/* ---------------- the adversary ---------------- */
	:: !adv_done && sbreaks < STREAM_BREAKS && sok -> d_step {
		printf("EV adversary: the migration stream breaks\n");
		sbreaks++; sok = 0; n_s2d = 0; n_d2s = 0; s2d[0] = 0; s2d[1] = 0; d2s[0] = 0; d2s[1] = 0;
		dump(); check(); reset_tmp() }
	:: !adv_done && vkills < VMM_KILLS && srcvm != SV_DEAD -> d_step {
		printf("EV adversary: sV killed\n");
		vkills++; srcvm = SV_DEAD; s_killed = 1; dump(); check(); reset_tmp() }
	:: !adv_done && vkills < VMM_KILLS && dstvm != DV_DEAD && dstvm != DV_NONE -> d_step {
		printf("EV adversary: dV killed\n");
		vkills++; dstvm = DV_DEAD; d_killed = 1; dump(); check(); reset_tmp() }

	:: !adv_done -> d_step { printf("EV adversary: stops\n"); adv_done = 1 }

	/* Nothing left to do: a terminal state. */
	:: else -> break
	od;
	/* (d) No VM stuck: the cluster is whole, every agent up, and the guest
	 * runs on the host the state names (unless the adversary killed that
	 * VMM: then the VM crashed, which the agent reports). */
	printf("END\n"); dump();
	d_step {
		d_not_settled = !(up[S] && up[D] && comp[S] == comp[D] && comp[T] == comp[S] &&
		                  syn[S] && syn[D]);
		d_vm_stuck = (own[S] == S && srcvm != SV_RUN && !s_killed) ||
		             (own[S] == D && dstvm != DV_RUNNING && !d_killed);
		/* a killed destination leaves the migration committed: its agent
		 * reports the VM crashed (not modelled) */
		d_migration_open = ph[S] != P_NONE && !(own[S] == D && d_killed)
	};
	assert(!d_not_settled);
	assert(!d_vm_stuck);
	assert(!d_migration_open)
}
