#!/bin/bash
#SBATCH --job-name=hpcq-1-1
#SBATCH --output=/srv/hpcq/autoalloc/1/1/stdout
#SBATCH --error=/srv/hpcq/autoalloc/1/1/stderr
#SBATCH --time=00:30:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --partition=debug
#SBATCH --account=project_465000000
#SBATCH --cpus-per-task=128

# allocation 1.1 of queue 1, made by hpcqueue
export HPCQUEUE_ALLOC_ID=1.1
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 1800 ))
module load LUMI/24.03
module load partition/C
module load cray-python

/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 120s --cpus 128
status=$?
exit $status

