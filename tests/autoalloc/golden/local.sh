#!/bin/bash
# allocation 3.7 of queue 3, made by hpcqueue
export HPCQUEUE_ALLOC_ID=3.7
export HPCQUEUE_SERVER_DIR=/srv/hpcq

/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 300s &
/opt/python/bin/python3 -m hpcqueue worker start --on-server-lost reconnect --idle-timeout 300s &
wait
status=$?
exit $status

