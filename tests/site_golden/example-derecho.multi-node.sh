#!/bin/bash
#PBS -N hpcq-1-1
#PBS -o /srv/hpcq/autoalloc/1/1/stdout
#PBS -e /srv/hpcq/autoalloc/1/1/stderr
#PBS -l walltime=06:00:00
#PBS -l select=4:ncpus=128:mpiprocs=1:ompthreads=1
#PBS -q main
#PBS -A UXXX0000
#PBS -r n
#PBS -l job_priority=economy

# allocation 1.1 of queue 1, made by hpcqueue
export HPCQUEUE_ALLOC_ID=1.1
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 21600 ))
module load conda

export TMPDIR="/glade/derecho/scratch/$USER/tmp"
mkdir -p "$TMPDIR"
# one worker per node of the allocation
mpiexec -n 4 --ppn 1 /bin/bash -c '/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 600s --cpus 128'
status=$?
exit $status

