#!/bin/bash
#SBATCH --job-name=hpcq-1-1
#SBATCH --output=/srv/hpcq/autoalloc/1/1/stdout
#SBATCH --error=/srv/hpcq/autoalloc/1/1/stderr
#SBATCH --time=04:00:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --account=m0000
#SBATCH --qos=regular
#SBATCH --cpus-per-task=128
#SBATCH --constraint=cpu

# allocation 1.1 of queue 1, made by hpcqueue
export HPCQUEUE_ALLOC_ID=1.1
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 14400 ))
export OMP_NUM_THREADS=1
module load python

/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 600s --cpus 128 --server-host 192.0.2.10
status=$?
exit $status

