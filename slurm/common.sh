#!/usr/bin/env bash
# Shared pieces of the sbatch scripts. Sourced by train.sbatch and eval.sbatch; run per node by srun:
#
#   srun ... bash slurm/common.sh trainer RECIPE [key=value ...]   # one torchrun on this node
#   srun ... bash slurm/common.sh services [RECIPE [key=value ...]]  # this node's sandbox and rollout servers
#
# The per-node roles read the job-level variables that train.sbatch exports (NODES, HEAD, ports,
# GPU split); they are documented there. Nothing here kills by name: every process is stopped by
# the PID we started it with.
# shellcheck disable=SC2086  # *_ARGS and TRAIN_CMD are word lists on purpose

# Timestamped log line to stdout (the job log): `log "phase ..."`.
log() { echo "[${LOG_TAG:-job} $(date '+%F %T')] $*"; }

die() { log "error: $*" >&2; exit 1; }

# This node's name inside the job (the emulated node name on a test cluster, else the hostname).
node_name() { echo "${SLURMD_NODENAME:-$(hostname -s)}"; }

# Index of node $1 in $NODES (space-separated, job order), or nothing.
node_index() {
  local i=0 n
  for n in $NODES; do
    [ "$n" = "$1" ] && { echo "$i"; return; }
    i=$((i + 1))
  done
}

# The address $1 resolves to (first IPv4 address), for binding a server to one interface.
host_addr() { getent ahostsv4 "$1" | awk 'NR == 1 { print $1 }'; }

# The device of the route from this node to address $1 (empty when `ip` cannot tell).
route_dev() { ip -o route get "$1" 2>/dev/null | sed -n 's/.* dev \([^ ]*\).*/\1/p'; }

# The non-loopback interface that carries address $1 on this node, if any.
addr_dev() { ip -o -4 addr show | awk -v a="$1" '{ split($4, p, "/") } p[1] == a && $2 != "lo" { print $2; exit }'; }

# iface_to HEAD [PEER ...]: the network interface for NCCL/gloo sockets on this node, given the
# head node and the job's other nodes (names or addresses); empty when `ip` cannot tell.
# Elsewhere the route to the head decides. On the head itself that route is `lo`, which the other
# nodes cannot reach: take the interface that carries the head's address instead. A name that
# resolves to loopback (Debian's "127.0.1.1 host" line) says nothing: the next node decides. `lo`
# only when every node's address is loopback: one host (a single node, or an emulated test cluster).
iface_to() {
  command -v ip >/dev/null || return 0
  local host addr dev loopback=0
  for host in "$@"; do
    addr=$(host_addr "$host")
    case "$addr" in
      127.*) loopback=1; continue ;;
      "") continue ;;
    esac
    dev=$(route_dev "$addr")
    [ "$dev" = lo ] && dev=$(addr_dev "$addr")  # this node's own address
    [ -z "$dev" ] || { echo "$dev"; return; }
    return 0  # a non-loopback node we cannot place: no guess
  done
  [ "$loopback" = 0 ] || echo lo
}

# 0 when GET $1 answers 2xx (never through a proxy). curl if present, else the job's python.
http_ok() {
  if command -v curl >/dev/null; then
    curl -fsS --noproxy '*' -o /dev/null -m 5 "$1" 2>/dev/null
  else
    python - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
sys.exit(0 if opener.open(sys.argv[1], timeout=5).status < 300 else 1)
EOF
  fi
}

# wait_http URL... : wait until every URL answers 2xx, at most $SERVICE_TIMEOUT_S seconds.
wait_http() {
  local deadline=$((SECONDS + ${SERVICE_TIMEOUT_S:-900})) url
  for url in "$@"; do
    until http_ok "$url"; do
      [ "$SECONDS" -lt "$deadline" ] || die "$url not healthy after ${SERVICE_TIMEOUT_S:-900}s"
      sleep 2
    done
    log "healthy: $url"
  done
}

# recipe_fields RECIPE [key=value ...]: print "<rollout.engine> <rollout.server_tp> <model.path>" of
# the resolved recipe; fails with the config error when the recipe or an override is wrong.
recipe_fields() {
  python -c 'import sys
from rest_megatron.config import load_config
config = load_config(sys.argv[1], sys.argv[2:])
print(config.rollout.engine, config.rollout.server_tp, config.model.path)' "$@"
}

# signal_step NAME SIGNAL: send SIGNAL to every process of this job's step called NAME (srun -J).
# It runs inside traps, where under `set -e` a failing squeue (the job mid-requeue) would end the
# script with status 1 instead of the one it was exiting with: every failure here is ignored.
signal_step() {
  local steps
  steps=$(squeue -h -s -j "$SLURM_JOB_ID" -o '%i %j' 2>/dev/null | awk -v n="$1" '$2 == n { print $1 }') || true
  [ -z "$steps" ] || scancel -s "$2" $steps 2>/dev/null || true
}

# wait_pids SECONDS PID...: wait for our child PIDs to exit; after SECONDS, TERM their srun clients
# (which then kill their steps) and wait for good.
wait_pids() {
  local deadline=$((SECONDS + $1)) pid
  shift
  for pid in "$@"; do
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 1; done
    kill -TERM "$pid" 2>/dev/null || true
  done
  wait "$@" 2>/dev/null || true
}

# Rollout server k (0-based, job-wide) listens on ROLLOUT_PORT + 10 k: servers never share a port,
# even when several emulated nodes share one host, and each keeps room for an engine's side ports.
rollout_port() { echo $((ROLLOUT_PORT + 10 * $1)); }

# This node's sandbox port: SANDBOX_PORT + node index, for the same reason.
sandbox_port() { echo $((SANDBOX_PORT + $(node_index "$(node_name)"))); }
# This node's sandbox address: loopback, or with SANDBOX_HOST=node the node's own address.
sandbox_host() { if [ "$SANDBOX_HOST" = node ]; then host_addr "$(node_name)"; else echo 127.0.0.1; fi; }

# Per node: the rollout servers (engine, GPUs) placed here, then the sandbox; waits on them all.
# Arguments: the recipe and its overrides, from which the servers' command lines are built (none:
# the rollout defaults with ROLLOUT_ENGINE / ROLLOUT_MODEL / ROLLOUT_TP).
node_services() {
  LOG_TAG="services $(node_name)"
  : "${NODES:?} ${SANDBOX:?} ${SANDBOX_PORT:?} ${ROLLOUT_PORT:?}"  # set by train.sbatch
  local me idx pids=() k gpus bind
  me=$(node_name)
  idx=$(node_index "$me")
  bind=$(host_addr "$me")
  trap 'log "stopping ${pids[*]}"; kill -TERM "${pids[@]}" 2>/dev/null; wait; exit 0' TERM INT
  # ROLLOUT_LAYOUT: "node:first_server:num_servers:first_gpu:gpus_per_server" per serving node.
  local entry node first count gpu0 per
  for entry in $ROLLOUT_LAYOUT; do
    IFS=: read -r node first count gpu0 per <<<"$entry"
    [ "$node" = "$me" ] || continue
    for ((k = 0; k < count; k++)); do
      gpus=$(gpu_slice $((gpu0 + k * per)) "$per")
      start_rollout_server "$bind" "$(rollout_port $((first + k)))" "$gpus" "$@" &
      pids+=($!)
    done
  done
  if [ "$SANDBOX" = 1 ]; then
    # Node-local by default: the trainer's driver rank uses the sandbox of its own node. Bound to the
    # node's address it demands the shared secret, which travels in the environment, never in argv.
    local host secret=()
    host=$(sandbox_host)
    [ "$SANDBOX_HOST" = node ] && secret=(--secret-env TOOLS_SANDBOX_SECRET)
    log "sandbox on $host:$(sandbox_port) (node $idx${secret:+, shared secret required})"
    python -m rest_megatron.cli sandbox-server --host "$host" --port "$(sandbox_port)" "${secret[@]}" $SANDBOX_ARGS &
    pids+=($!)
  fi
  [ ${#pids[@]} -gt 0 ] || { log "nothing to run on this node"; exit 0; }
  # One service dying ends the step: the job script sees it and stops the run.
  local status=0
  wait -n "${pids[@]}" || status=$?
  log "a service exited (status $status); stopping the others"
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait
  exit "$status"
}

# gpu_slice FIRST COUNT: COUNT GPUs from position FIRST of this step's CUDA_VISIBLE_DEVICES (or of
# 0..N-1 when Slurm set none); empty for COUNT 0.
gpu_slice() {
  [ "$2" -gt 0 ] || return 0
  local visible=${CUDA_VISIBLE_DEVICES:-$(seq -s, 0 $(($1 + $2 - 1)))}
  echo "$visible" | cut -d, -f"$(($1 + 1))-$(($1 + $2))"
}

# start_rollout_server BIND_ADDR PORT GPUS [RECIPE key=value ...]: one inference server in the
# foreground; no GPUs means none visible (the embedded engine on CPU). Its command line comes from
# `rest-megatron serve-command`, the builder the trainer's own launcher uses, so it matches the recipe
# (server TP, rollout.sglang / rollout.vllm flags, deterministic mode, log-probs mode); ROLLOUT_ARGS
# follow it.
start_rollout_server() {
  local bind=$1 port=$2 gpus=$3 cmd_file cmd=()
  shift 3
  export CUDA_VISIBLE_DEVICES=$gpus
  cmd_file=$(mktemp)
  python -m rest_megatron.cli serve-command "$@" --engine "$ROLLOUT_ENGINE" --model "$ROLLOUT_MODEL" \
    --tp "$ROLLOUT_TP" --host "$bind" --port "$port" --null >"$cmd_file" \
    || { rm -f "$cmd_file"; die "no rollout server command for ROLLOUT_ENGINE=$ROLLOUT_ENGINE (see above)"; }
  mapfile -d '' -t cmd <"$cmd_file"
  rm -f "$cmd_file"
  log "rollout server ($ROLLOUT_ENGINE) on $bind:$port, GPUs '${gpus:-none}': ${cmd[*]} $ROLLOUT_ARGS"
  exec "${cmd[@]}" $ROLLOUT_ARGS
}

# Per trainer node: wait for this node's sandbox and every rollout server, then one torchrun.
node_trainer() {
  LOG_TAG="trainer $(node_name)"
  : "${RUN_DIR:?} ${HEAD:?} ${TRAIN_NODES:?} ${NPROC_PER_NODE:?} ${MASTER_PORT:?}"  # set by train.sbatch
  local me is_host=0 urls=()
  me=$(node_name)
  [ "$me" = "$HEAD" ] && is_host=1
  # Interfaces for NCCL and gloo: the one that reaches the head node, unless set by the user.
  local iface
  # shellcheck disable=SC2046  # the other trainer nodes, one word each
  iface=$(iface_to "$HEAD" $(echo "$NODES" | cut -d' ' -f2-"$TRAIN_NODES"))
  export NCCL_SOCKET_IFNAME=${NCCL_SOCKET_IFNAME:-${iface:-^lo,docker0}}
  [ -n "${GLOO_SOCKET_IFNAME:-$iface}" ] && export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-$iface}
  # Colocated rollout servers hold the GPUs after the trainer's first NPROC_PER_NODE.
  if [ "$TRAIN_GPUS_PER_NODE" -gt 0 ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
    CUDA_VISIBLE_DEVICES=$(gpu_slice 0 "$TRAIN_GPUS_PER_NODE")
    export CUDA_VISIBLE_DEVICES
  fi
  [ "$SANDBOX" = 1 ] && urls+=("http://$(sandbox_host):$(sandbox_port)/health")
  for url in $ROLLOUT_URLS; do urls+=("$url/health"); done
  [ ${#urls[@]} -eq 0 ] || wait_http "${urls[@]}"
  if [ "$LAUNCH_OVERRIDES" = 1 ] && [ "$SANDBOX" = 1 ]; then
    # After the recipe, before the user's overrides (theirs win): this node's own sandbox.
    set -- "$1" "sandbox.url=http://$(sandbox_host):$(sandbox_port)" "${@:2}"
  fi
  log "torchrun: node $(node_index "$me")/$TRAIN_NODES, $NPROC_PER_NODE proc(s), rendezvous $HEAD:$MASTER_PORT" \
      "(host: $is_host), NCCL_SOCKET_IFNAME=$NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-}"
  # --tee 3: every rank's stdout/stderr also lands in $(rank_log_dir)/$me/, for failure_report.
  exec python -m torch.distributed.run --nnodes "$TRAIN_NODES" --nproc-per-node "$NPROC_PER_NODE" \
    --rdzv-backend c10d --rdzv-endpoint "$HEAD:$MASTER_PORT" --rdzv-id "$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}" \
    --rdzv-conf "is_host=$is_host" --max-restarts 0 --log-dir "$(rank_log_dir)/$me" --tee 3 $TRAIN_CMD "$@"
}

# Per-rank logs of this attempt: $RUN_DIR/logs/<job id>-<restart count>/<node>/.../<local rank>/.
rank_log_dir() { echo "$RUN_DIR/logs/$SLURM_JOB_ID-${SLURM_RESTART_COUNT:-0}"; }

# failure_report: the exception that ended each failed rank, from the per-rank logs, the log written
# last coming last (so the root cause usually comes first). torch prefixes a rank's uncaught
# traceback with "[rankN]:"; its last line names the exception.
failure_report() {
  local file line found=0
  while IFS= read -r file; do
    line=$(grep -E '^\[rank[0-9]+\]: [A-Za-z_][A-Za-z0-9_.]*(Error|Exception|Interrupt|Exit)\b' "$file" | tail -n 1 || true)
    [ -n "$line" ] || continue
    found=1
    log "failed: ${line%%:*} on node $(echo "${file#"$(rank_log_dir)/"}" | cut -d/ -f1): ${line#*: }"
  done < <(find "$(rank_log_dir)" -name stderr.log -printf '%T@ %p\n' 2>/dev/null | sort -n | cut -d' ' -f2-)
  [ "$found" = 1 ] || log "no rank reported an exception: a rank was killed or crashed (see the log above)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  role=${1:?usage: common.sh trainer|services [args...]}
  shift
  case "$role" in
    trainer) node_trainer "$@" ;;
    services) node_services "$@" ;;
    *) die "unknown role $role" ;;
  esac
fi
