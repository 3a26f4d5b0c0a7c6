#!/bin/bash
# accept-dispatch-run.sh MODE (reuseport|dispatch) -> one line: tunnels/s, CPU us per tunnel,
# GET/s, CPU us per GET. Setup, by hand (an experiment, not part of bench/run.sh):
#   git worktree add /tmp/wt HEAD && git -C /tmp/wt apply bench/experiments/accept-dispatch.patch
#   build /tmp/wt (cmake + ninja egressd); EXP_BIN=/tmp/wt/build/egressd
#   EXP_DIR: a directory with loadgen (g++ -O2 -std=c++20 bench/loadgen.cpp -lssl -lcrypto
#   -pthread), e.yaml (egressd on 127.0.0.1:13228, 2 workers, access log off, CONNECT and HTTP to
#   port 18282 allowed, destinations.allow 127.0.0.0/8) and wrk.lua (wrk.path =
#   "http://127.0.0.1:18282/small"); nginx serving /small on 127.0.0.1:18282.
cd "${EXP_DIR:?set EXP_DIR}"
BIN=${EXP_BIN:?set EXP_BIN}
if [ "$1" = dispatch ]; then export EXP_ACCEPT_DISPATCH=1; else unset EXP_ACCEPT_DISPATCH; fi
$BIN --config e.yaml 2>>egressd.err &
P=$!
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/13228) 2>/dev/null && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' /proc/$P/stat; }
c0=$(cpu)
out=$(./loadgen tunnels --target 127.0.0.1:13228 --origin 127.0.0.1:18282 --path /small --via connect --conns 64 --duration 5)
c1=$(cpu)
rate=$(echo "$out" | tr ' ' '\n' | awk -F= '$1=="rate"{print $2}')
done_n=$(echo "$out" | tr ' ' '\n' | awk -F= '$1=="completed"{print $2}')
c2=$(cpu)
w=$(wrk -t2 -c50 -d5s -s wrk.lua http://127.0.0.1:13228/ 2>&1)
c3=$(cpu)
reqs=$(echo "$w" | awk '/requests in/ {print $1}')
rps=$(echo "$w" | awk '/Requests\/sec/ {print $2}')
kill $P; wait $P 2>/dev/null
awk -v m=$1 -v r=$rate -v d=$done_n -v a=$c0 -v b=$c1 -v rps=$rps -v q=$reqs -v c=$c2 -v e=$c3 'BEGIN{printf "%s tunnels/s=%s cpu_us/tunnel=%.1f GET/s=%s cpu_us/GET=%.2f\n", m, r, (b-a)*10000/d, rps, (e-c)*10000/q}'
