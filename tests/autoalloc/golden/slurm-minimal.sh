#!/bin/bash
#SBATCH --job-name=hpcq-3-7
#SBATCH --output=/srv/hpcq/autoalloc/3/7/stdout
#SBATCH --error=/srv/hpcq/autoalloc/3/7/stderr
#SBATCH --time=01:00:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1

# allocation 3.7 of queue 3, made by hpcqueue
export HPCQUEUE_ALLOC_ID=3.7
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 3600 ))

/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 300s
status=$?
exit $status

