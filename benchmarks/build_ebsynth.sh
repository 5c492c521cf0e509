#!/bin/sh
# Build EbSynth's CPU binary from a source folder you have (a clone of github.com/jamriska/ebsynth), for
# `benchmarks/real_motion.py --ebsynth PATH`. Never needed by the package, its tests or CI; nothing is downloaded.
#
#     git clone https://github.com/jamriska/ebsynth ~/src/ebsynth    # once, wherever you keep sources
#     benchmarks/build_ebsynth.sh ~/src/ebsynth [OUT]                # OUT defaults to SRC_DIR/bin/ebsynth
#     python benchmarks/real_motion.py --ebsynth ~/src/ebsynth/bin/ebsynth --clips dog --edits cartoon
#
# Needs g++ with OpenMP (Debian: build-essential). Takes a few minutes; the binary uses every core it is given
# (OMP_NUM_THREADS limits it).
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 SRC_DIR [OUT]  (SRC_DIR: a clone of github.com/jamriska/ebsynth)" >&2
    exit 2
fi
src=$1
out=${2:-$src/bin/ebsynth}
for f in src/ebsynth.cpp src/ebsynth_cpu.cpp src/ebsynth_nocuda.cpp include/ebsynth.h; do
    if [ ! -f "$src/$f" ]; then
        echo "error: $src/$f not found; SRC_DIR must be a clone of github.com/jamriska/ebsynth" >&2
        exit 2
    fi
done
command -v g++ >/dev/null || { echo "error: g++ not found; install a C++ compiler (Debian: apt-get install g++)" >&2; exit 2; }
mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
# The CPU backend alone (ebsynth_nocuda.cpp stands in for CUDA), optimised, with OpenMP for its parallel loops.
g++ -std=c++11 -O3 -DNDEBUG -fopenmp -I"$src/include" \
    "$src/src/ebsynth.cpp" "$src/src/ebsynth_cpu.cpp" "$src/src/ebsynth_nocuda.cpp" -o "$tmp"
mv "$tmp" "$out"
echo "built $out"
