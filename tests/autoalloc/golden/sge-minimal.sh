#!/bin/bash
#$ -N hpcq-3-7
#$ -o /srv/hpcq/autoalloc/3/7/stdout
#$ -e /srv/hpcq/autoalloc/3/7/stderr
#$ -S /bin/bash
#$ -l h_rt=01:00:00

# allocation 3.7 of queue 3, made by hpcqueue
export HPCQUEUE_ALLOC_ID=3.7
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 3600 ))

/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 300s
status=$?
exit $status

