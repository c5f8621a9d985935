#!/bin/bash
#PBS -N hpcq-1-1
#PBS -o /srv/hpcq/autoalloc/1/1/stdout
#PBS -e /srv/hpcq/autoalloc/1/1/stderr
#PBS -l walltime=01:00:00
#PBS -l select=1:ncpus=8

# allocation 1.1 of queue 1, made by hpcqueue
export HPCQUEUE_ALLOC_ID=1.1
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 3600 ))

/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 300s --cpus 8
status=$?
exit $status

