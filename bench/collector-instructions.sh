#!/bin/sh
# collector-instructions.sh: the user-space instructions of one collector
# cycle, counted by valgrind's cachegrind: repeatable whatever else the
# machine is doing, unlike CPU time. It runs BenchmarkBinaryCycle (30
# containers, -interval 1s) twice with the collector under cachegrind, for
# 10 and for 40 measured cycles, and divides the difference of the totals
# by 30, so that start-up drops out; then it lists the functions that take
# most of a cycle. Needs valgrind (Debian's package). About two minutes.
#
#   bench/collector-instructions.sh            # this tree's collector
#   bench/collector-instructions.sh old-build  # a prebuilt (unstripped) binary
#
# GODEBUG=asyncpreemptoff=1: cachegrind and callgrind abort on Go's
# preemption signal in some runs; it changes nothing a cycle does.
set -eu
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
work=$(mktemp -d)
[ -n "${KEEP:-}" ] && echo "keeping $work" >&2 || trap 'rm -rf "$work"' EXIT
bin=${1:-}
if [ -z "$bin" ]; then
	bin=$work/collector
	CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/collector # symbols kept, for the function list
fi
bin=$(realpath "$bin")
cat >"$work/under-cachegrind" <<WRAP
#!/bin/sh
exec valgrind -q --tool=cachegrind --cache-sim=no --log-file="\$CG_OUT.log" --cachegrind-out-file="\$CG_OUT" "$bin" "\$@"
WRAP
chmod +x "$work/under-cachegrind"
for n in 10 40; do
	CG_OUT=$work/cg.$n GODEBUG=asyncpreemptoff=1 TILLPIPE_BENCH_COLLECTOR=$work/under-cachegrind \
		go test -run '^$' -bench 'BenchmarkBinaryCycle/containers=30/^defaults$' -benchtime ${n}x ./cmd/collector/ >"$work/bench.$n" 2>&1 ||
		{ cat "$work/bench.$n" "$work/cg.$n.log" >&2; exit 1; }
done
a=$(awk '/^summary:/ {print $2}' "$work/cg.10")
b=$(awk '/^summary:/ {print $2}' "$work/cg.40")
echo "$(( (b - a) / 30 )) instructions per cycle"
echo "the functions taking most, in instructions over those 30 cycles:"
cg_diff "$work/cg.10" "$work/cg.40" >"$work/diff" 2>/dev/null
cg_annotate "$work/diff" 2>/dev/null | sed -n '/file:function/,$p' | sed -n '3,22p'
