#!/usr/bin/env bash
# Checks the spin models (docs/cluster-state.md, "The model"):
#   ha/replica.pml       the replica and its sync protocol
#   migrate/handover.pml the migration handover
#   ha/failover.pml      fencing and failover
# Usage: tests/model/run-models.sh BUILD_DIR [--deep]
#
# For each check: spin -a, gcc pan.c, run pan, all in BUILD_DIR/model/NAME/.
# A "holds" check passes when pan explored the whole state space (no
# truncation) and found no error; a "fails" check is a deliberately broken
# variant (a -D switch) and passes when spin finds a counterexample to the
# property it breaks. The counterexample, replayed and readable, is left in
# BUILD_DIR/model/NAME/counterexample.txt.
# Output: cmocka's lines ([ RUN ], [ OK ], [ FAILED ], [ PASSED ] N test(s).)
# so that tests/run-tests.sh counts them; exit status 1 when a check failed.
# --deep adds the bigger (slower: minutes, GBs) checks of `make model-deep`.
set -u

build=${1:?usage: run-models.sh BUILD_DIR [--deep]}
deep=0
[ "${2:-}" = "--deep" ] && deep=1
src=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$build/model" || exit 1
out=$(cd "$build/model" && pwd)
# pan.c compiles in ~1.5 s at -O1 (~5 s at -O2, for a search ~20% faster);
# a broken variant stops at its first error: -O0 (~1 s).
CC=${CC:-cc}
PAN_CFLAGS="-w -DSAFETY -DNOREDUCE"
MEMLIM_MB=${MODEL_MEMLIM_MB:-4096}

names=()
failed=()
passed=0

# check NAME MODEL EXPECT SPIN_DEFINES [CC_DEFINES [OPT [HASH]]]
#   EXPECT: "holds", or "fails:TEXT" where TEXT is a piece of the assertion
#   spin must report violated (so that a variant fails for the intended
#   reason, not another). OPT: the compiler's optimisation for a "holds"
#   check (-O1 unless given); HASH: its hash table (-w23 unless given).
check() {
    local name=$1 model=$2 expect=$3 defs=$4 ccdefs=${5:-} hopt=${6:--O1} hhash=${7:--w23}
    local dir="$out/$name"
    names+=("$name")
    echo "[ RUN      ] $name"
    rm -rf "$dir" && mkdir -p "$dir"
    local base
    base=$(basename "$model")
    cp "$src/$model" "$dir/$base"
    # shellcheck disable=SC2086 # the defines are words
    if ! (cd "$dir" && spin -a $defs "$base" > spin.log 2>&1); then
        sed 's/^/    /' "$dir/spin.log" | head -20
        fail "$name" "spin -a $defs $model failed"
        return
    fi
    # shellcheck disable=SC2086
    local opt=$hopt
    [ "$expect" = holds ] || opt=-O0
    if ! (cd "$dir" && $CC $opt $PAN_CFLAGS -DMEMLIM=$MEMLIM_MB $ccdefs -o pan pan.c > cc.log 2>&1); then
        sed 's/^/    /' "$dir/cc.log" | head -20
        fail "$name" "compiling pan.c failed"
        return
    fi
    # -w: the hash table (2^w slots): pan clears it first, so not bigger
    # than the search needs
    local hash=$hhash
    [ "$expect" = holds ] || hash=-w20
    # CPU seconds (user+sys): pan's own "elapsed time" is wall-clock, which
    # other loads on the machine stretch
    local TIMEFORMAT='%U %S'
    { time (cd "$dir" && nice ./pan -m100000 $hash > pan.out 2>&1); } 2> "$dir/cpu.txt"
    local cpu
    cpu=$(awk '{ printf "%.1f", $1 + $2 }' "$dir/cpu.txt")
    local errors states depth secs
    errors=$(sed -n 's/.*errors: \([0-9]\+\).*/\1/p' "$dir/pan.out" | tail -n1)
    states=$(sed -n 's/^ *\([0-9.e+]\+\) states, stored.*/\1/p' "$dir/pan.out" | tail -n1)
    depth=$(sed -n 's/.*depth reached \([0-9]\+\).*/\1/p' "$dir/pan.out" | tail -n1)
    secs=$(sed -n 's/^pan: elapsed time \([0-9.e+]\+\) seconds.*/\1/p' "$dir/pan.out" | tail -n1)
    states=$(awk -v s="${states:-0}" 'BEGIN { printf "%d", s }')
    if [ -z "$errors" ]; then
        sed 's/^/    /' "$dir/pan.out" | tail -20
        fail "$name" "pan did not finish (see $dir/pan.out)"
        return
    fi
    case $expect in
    holds)
        local why=""
        if [ "$errors" != 0 ]; then
            why="spin found an error: $(grep -m1 -E 'violated|invalid end state|error:' "$dir/pan.out")"
            replay "$dir" "$base" "$defs"
            why="$why; counterexample in $dir/counterexample.txt"
        elif grep -q -E 'Search not completed|max search depth too small|reached -DMEMLIM|out of memory' "$dir/pan.out"; then
            why="the search was truncated: $(grep -m1 -E 'Search not completed|max search depth too small|reached -DMEMLIM|out of memory' "$dir/pan.out")"
        fi
        if [ -n "$why" ]; then
            fail "$name" "$why"
            return
        fi
        echo "    $model ${defs:-(defaults)}: holds; whole state space: $states states, depth $depth, ${cpu}s CPU (${secs}s)"
        ;;
    fails:*)
        local want=${expect#fails:}
        local got
        got=$(grep -m1 -E 'assertion violated|invalid end state' "$dir/pan.out")
        if [ "$errors" = 0 ] || [ -z "$got" ]; then
            fail "$name" "spin found no counterexample with $defs (the model no longer catches this bug)"
            return
        fi
        if ! grep -m1 'assertion violated' "$dir/pan.out" | grep -q -F -- "$want"; then
            fail "$name" "spin found another error than expected ($want): $got"
            return
        fi
        replay "$dir" "$base" "$defs"
        local events
        events=$(grep -c '^ *EV ' "$dir/counterexample.txt")
        echo "    $model $defs: counterexample as expected: ${got#pan:1: }, $events events (${states} states searched, ${cpu}s CPU)"
        echo "    replayed in $dir/counterexample.txt"
        ;;
    esac
    echo "[       OK ] $name"
    passed=$((passed + 1))
}

fail() {
    echo "    $2"
    echo "[  FAILED  ] $1"
    failed+=("$1")
}

# The trail, replayed by spin: each event and the state after it.
replay() {
    local dir=$1 base=$2 defs=$3
    local trail
    trail=$(ls "$dir"/*.trail 2>/dev/null | head -n1)
    [ -n "$trail" ] || return 0
    # shellcheck disable=SC2086
    (cd "$dir" && spin -t -k "$(basename "$trail")" $defs "$base" 2>&1 |
        grep -v -E '^\s*$|^spin: trail ends|^#processes|^\s+[a-z_][a-z_0-9]*(\[[0-9]+\])? = |^ *[0-9]+:\s+proc|process(es)? created' \
        > counterexample.txt)
}

if ! command -v spin > /dev/null; then
    echo "[ RUN      ] models"
    fail models "spin is not installed (make deps, or apt-get install spin)"
    echo "[==========] 1 test(s) run."
    echo "[  PASSED  ] 0 test(s)."
    echo "[  FAILED  ] 1 test(s), listed below:"
    echo "[  FAILED  ] models"
    exit 1
fi

start=$(date +%s)
echo "[==========] spin models ($(spin -V | head -n1)), built in $out"

R=ha/replica.pml
H=migrate/handover.pml
P1='(lg[ti]&ackd)==ackd'                          # replica: no acknowledged change lost
PA='!((((srcvm==0)||(srcvm==1))&&(dstvm==3)))'    # handover (a): never two copies running
PC='(dstvm!=3)||d_told'                           # handover (c): D runs after its commit
PD_STUCK='!(d_vm_stuck)'                          # handover (d): the guest runs on its owner
PD_OPEN='!(d_migration_open)'                     # handover (d): the migration ends
F=ha/failover.pml
FA='!(a_two_running)'                             # failover (a): never two copies running
FC='!(c_released_unfenced)'                       # failover (c): nothing released before the fence
FD='!(d_vm_not_running)'                          # failover (d): every HA VM runs in the end
FE='!(e_fenced_not_off)'                          # failover (e): fenced means off
FF='!(f_started_without_quorum)'                  # failover (f): no start without quorum
# the C as first committed but its episode clock
FC_BUT_SEEN='-DC_DEADLINE -DLATCH_RACE -DSTART_WITHOUT_QUORUM -DNO_CRASH_RECOVERY -DINSTALL_MEMBERS_ONLY -DNO_HOST_DOWN'
# failover's adversary for the variants (the model's defaults: one of each),
# searched breadth first (SHORTEST: no hidden variables, which -DBFS refuses)
FP1='-DSHORTEST -DPARTS=1 -DFREEZES=0 -DCRASHES=0 -DDEVFAIL=0 -DOPCONF=0'   # one partition
FP2='-DSHORTEST -DPARTS=2 -DFREEZES=0 -DCRASHES=0 -DDEVFAIL=0 -DOPCONF=0'   # two partitions
FZ1='-DSHORTEST -DPARTS=0 -DFREEZES=1 -DCRASHES=0 -DDEVFAIL=0 -DOPCONF=0'   # one freeze
FPC='-DSHORTEST -DPARTS=1 -DFREEZES=0 -DCRASHES=1 -DDEVFAIL=0 -DOPCONF=0'   # a partition, a crash

# Model 1: the fixed protocol holds, in two scopes: at most 4 partitions,
# merges, crashes, leaves or power losses (restarts free, alone); at most 3,
# restarts straight into a configuration. Each weakness restored fails (in
# the smallest scope that shows it).
check replica_fixed              $R holds        "-DEVMAX=4"                     -DCOLLAPSE
check replica_fixed_restart_into $R holds        "-DEVMAX=3 -DRESTART_INTO"      -DCOLLAPSE
check replica_old_merge_rule     $R "fails:$P1"  "-DEVMAX=3 -DOLD_MERGE_RULE"    -DCOLLAPSE
check replica_brief_rule         $R "fails:$P1"  "-DEVMAX=3 -DBRIEF_RULE"        -DCOLLAPSE
check replica_main_rule          $R "fails:$P1"  "-DEVMAX=4 -DMAIN_RULE"         -DCOLLAPSE
check replica_config_at_confchg  $R "fails:$P1"  "-DEVMAX=3 -DCONFIG_AT_CONFCHG" -DCOLLAPSE
check replica_order_by_version   $R "fails:$P1"  "-DEVMAX=3 -DORDER_BY_VERSION"  -DCOLLAPSE
check replica_keep_pending       $R "fails:$P1"  "-DEVMAX=3 -DKEEP_PENDING"      -DCOLLAPSE
check replica_ack_by_version     $R "fails:$P1"  "-DEVMAX=3 -DRESTART_INTO -DACK_BY_VERSION" -DCOLLAPSE

# Model 2: the fixed handover holds (bigger budgets than the variants');
# each weakness fails. Its state space is small: breadth-first, so that
# the counterexamples are the shortest.
check handover_fixed             $H holds        "-DSPLITS=2 -DAGENT_CRASHES=3 -DSTREAM_BREAKS=2"
check handover_old_dest_runs_on_source_commit $H "fails:$PC" "-DOLD_DEST_RUNS_ON_SOURCE_COMMIT" -DBFS
check handover_resume_if_gone    $H "fails:$PA"  "-DRESUME_IF_GONE"               -DBFS
check handover_commit_on_apply   $H "fails:$PD_STUCK" "-DCOMMIT_ON_APPLY"         -DBFS
check handover_kill_when_not_quorate $H "fails:$PD_STUCK" "-DKILL_WHEN_NOT_QUORATE" -DBFS
check handover_brief             $H "fails:$PD_STUCK" "-DBRIEF_HANDOVER"          -DBFS
check handover_one_shot_sends    $H "fails:$PD_OPEN" "-DONE_SHOT_SENDS"           -DBFS

# Model 3: the fixed protocol holds in two scopes (W=4 s watchdog): a
# partition, a freeze, a failing fence device, an operator's confirmation
# and one boot; a partition, a crash, a failing device, a confirmation and
# two boots; the C is that protocol now. The C from 7ba3e35 ran no VM twice
# and said nothing false, but left an HA VM down for good (a persisted
# copy's install, the recovery condition of a VM reported gone); agent/ha.c
# as first committed (ca43215) ran a VM twice. Each of
# the C's weak choices, restored alone, fails on the rule it breaks, and so
# does each deliberately broken variant (breadth first: the shortest
# counterexamples; with the properties a variant breaks first turned off
# where the brief names (a)).
check failover_fixed             $F holds        "-DCRASHES=0 -DBOOTS=1"          "" -O2
check failover_fixed_crash       $F holds        "-DFREEZES=0 -DBOOTS=2"          "" -O2
check failover_7ba3e35           $F "fails:$FD"  "$FPC -DAS_7BA3E35" -DBFS
check failover_as_first_committed $F "fails:$FA" "$FP2 -DAS_FIRST_COMMITTED -DCHECK_D=0 -DCHECK_E=0 -DCHECK_F=0" -DBFS
check failover_c_deadline        $F "fails:$FE"  "$FZ1 -DC_DEADLINE"   -DBFS
check failover_seen_any_state    $F "fails:$FA"  "$FP2 -DSEEN_ANY_STATE -DCHECK_E=0" -DBFS
check failover_latch_race        $F "fails:$FE"  "$FZ1 -DLATCH_RACE"   -DBFS
check failover_start_without_quorum $F "fails:$FF" "$FPC -DSTART_WITHOUT_QUORUM" -DBFS
check failover_no_crash_recovery $F "fails:$FD"  "$FP1 -DNO_CRASH_RECOVERY" -DBFS
check failover_recover_lost_only $F "fails:$FD"  "$FPC -DRECOVER_LOST_ONLY" -DBFS
check failover_install_members_only $F "fails:$FD" "$FPC -DINSTALL_MEMBERS_ONLY -DNO_HOST_DOWN" -DBFS
check failover_release_on_lost   $F "fails:$FA"  "$FP1 -DRELEASE_ON_LOST -DCHECK_C=0" -DBFS
check failover_release_on_lost_c $F "fails:$FC"  "$FP1 -DRELEASE_ON_LOST" -DBFS
check failover_no_self_stop      $F "fails:$FA"  "$FP1 -DNO_SELF_STOP -DCHECK_E=0" -DBFS
check failover_deadline_too_short $F "fails:$FA" "$FZ1 -DDEADLINE_TOO_SHORT -DCHECK_E=0" -DBFS
check failover_stale_episode     $F "fails:$FA"  "$FP2 -DW=2 -DSTALE_EPISODE -DCHECK_E=0" -DBFS
check failover_fencer_any_side   $F "fails:$FA"  "$FP1 -DFENCER_ANY_SIDE -DCHECK_E=0 -DCHECK_F=0" -DBFS
# An orderly stop of a ternd (SIGTERM): with a partition, or a crash and
# every host with a fence device (host_down); disarming the watchdog on
# every orderly stop runs a VM twice; without host_down, a host whose ternd
# stopped and whose node then went stays owner of its VMs for good.
check failover_stop              $F holds        "-DTSTOPS=1 -DCRASHES=0 -DFREEZES=0 -DBOOTS=1" "" -O2
check failover_stop_crash        $F holds        "-DTSTOPS=1 -DFREEZES=0 -DPARTS=0 -DBOOTS=1 -DDEVFAIL=0 -DOPCONF=0 -DDEVS=7" "" -O2
check failover_disarm_on_stop    $F "fails:$FA"  "$FP1 -DTSTOPS=1 -DDISARM_ON_STOP -DCHECK_E=0" -DBFS
check failover_no_host_down      $F "fails:$FD"  "-DSHORTEST -DPARTS=0 -DFREEZES=0 -DCRASHES=1 -DDEVFAIL=0 -DOPCONF=0 -DTSTOPS=1 -DDEVS=7 -DBOOTS=0 -DNO_HOST_DOWN" -DBFS

if [ "$deep" = 1 ]; then
    # Two client changes: epochs that each state counts itself collide
    # across histories (the fixed protocol in this scope: see the doc).
    check replica_local_epoch    $R "fails:$P1"  "-DEVMAX=3 -DRESTART_INTO -DCH=2 -DLOCAL_EPOCH" -DCOLLAPSE
    # Five nodes, fewer events.
    check replica_fixed_n5       $R holds        "-DN=5 -DEVMAX=2"               -DCOLLAPSE
    # One more event of each kind.
    check replica_fixed_ev5      $R holds        "-DEVMAX=5"                     -DCOLLAPSE
    check handover_fixed_deep    $H holds        "-DSPLITS=3 -DAGENT_CRASHES=4 -DVMM_KILLS=2 -DSTREAM_BREAKS=2"
    # Fencing and failover: one of each failure with a 2 s watchdog; a
    # partition, a freeze and a crash with a 4 s one; two partitions; a
    # cut-off host whose corosync notices up to two seconds late (the
    # deadline one second longer).
    check failover_fixed_w2      $F holds        "-DW=2 -DBOOTS=1"                "" -O2 -w25
    check failover_fixed_deep    $F holds        "-DDEVFAIL=0 -DOPCONF=0 -DBOOTS=1" "" -O2 -w25
    check failover_fixed_partitions $F holds     "-DPARTS=2 -DFREEZES=0 -DCRASHES=0 -DBOOTS=1" "" -O2
    check failover_fixed_lag1    $F holds        "-DLAG=1 -DCRASHES=0 -DBOOTS=1"  "" -O2
    # An orderly stop with a partition and a crash, every host with a
    # device; and safety only with host 2 on its watchdog alone (a host
    # whose ternd stopped and whose node then went is fenced by a device or
    # the operator: its watchdog may have been disarmed).
    check failover_stop_crash_deep $F holds      "-DTSTOPS=1 -DFREEZES=0 -DBOOTS=2 -DDEVFAIL=0 -DOPCONF=0 -DDEVS=7" "" -O2 -w25
    check failover_stop_crash_wd $F holds        "-DTSTOPS=1 -DFREEZES=0 -DBOOTS=2 -DDEVFAIL=0 -DOPCONF=0 -DCHECK_D=0" "" -O2 -w25
    # The C as first committed runs no VM twice but through its episode
    # clock, here ((e), (f), (d) turned off).
    check failover_first_but_seen $F holds       "-DCRASHES=0 -DBOOTS=1 $FC_BUT_SEEN -DCHECK_D=0 -DCHECK_E=0 -DCHECK_F=0" "" -O2
fi

end=$(date +%s)
total=$(( passed + ${#failed[@]} ))
echo "[==========] $total test(s) run ($((end - start)) s)."
echo "[  PASSED  ] $passed test(s)."
if [ ${#failed[@]} -gt 0 ]; then
    echo "[  FAILED  ] ${#failed[@]} test(s), listed below:"
    for f in "${failed[@]}"; do
        echo "[  FAILED  ] $f"
    done
    exit 1
fi
exit 0
