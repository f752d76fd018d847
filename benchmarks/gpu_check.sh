#!/bin/sh
# GPU check in one command (a machine with a CUDA GPU; within 8 minutes):
#   sh benchmarks/gpu_check.sh [--model MODEL] [--table FILE]     (default: the shipped starter model)
# Prints one table (see benchmarks/gpu_check.py); `python benchmarks/gpu_check.py --smoke` tests it on a CPU.
set -e
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 480 python3 benchmarks/gpu_check.py "$@"
