#!/bin/bash
#SBATCH --job-name=hpcq-3-7
#SBATCH --output=/srv/hpcq/autoalloc/3/7/stdout
#SBATCH --error=/srv/hpcq/autoalloc/3/7/stderr
#SBATCH --time=1-01:00:00
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --partition=gpu
#SBATCH --account=proj-42
#SBATCH --qos=normal
#SBATCH --cpus-per-task=16
#SBATCH --gpus-per-node=2
#SBATCH --mem=64G
#SBATCH --constraint=a100
#SBATCH --exclusive

# allocation 3.7 of queue 3, made by hpcqueue
export HPCQUEUE_ALLOC_ID=3.7
export HPCQUEUE_SERVER_DIR=/srv/hpcq
# when the allocation ends: workers never start a task that would not fit before it
export HPCQUEUE_ALLOC_END=$(( $(date +%s) + 90000 ))
export OMP_NUM_THREADS='1 2'
module load python/3.11
source /etc/profile.d/site.sh

srun --nodes=4 --ntasks-per-node=1 /opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 120s --cpus 16 --resource gpus=2
status=$?
echo done
exit $status

