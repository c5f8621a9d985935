"""Indexed resources (hpcqueue.worker.resources): a worker's GPUs as indices, detected or
given, and each task holding indices of its own."""

import json
import os
import stat

import pytest
from conftest import one_clear_line, wait_for

from hpcqueue.exceptions import UsageError
from hpcqueue.worker.resources import (
    IndexPool, detect_gpus, parse_worker_resources, set_task_env, worker_gpus,
)


def test_worker_resources_are_counts_or_indices():
    assert parse_worker_resources(["gpus=[0, 1,3]", "licenses=4"]) == (
        {"gpus": 3, "licenses": 4}, {"gpus": [0, 1, 3]})
    assert parse_worker_resources(["gpus=[]"]) == ({"gpus": 0}, {"gpus": []})
    for bad, needle in (("gpus=[0,x]", "in brackets"), ("gpus=[0,0]", "twice"),
                        ("gpus=two", "whole number"), ("cpus=2", "--cpus")):
        with pytest.raises(UsageError, match=needle):
            parse_worker_resources([bad])


def test_gpus_are_found_in_the_visible_devices_variables():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ("nvidia", [2, 3])
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == ("nvidia", [])
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == ("nvidia", [])
    assert detect_gpus({"ROCR_VISIBLE_DEVICES": "0,1"}) == ("amd", [0, 1])
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "GPU-8d2c"}) == ("nvidia", [])


def test_index_pool_never_hands_out_an_index_twice():
    pool = IndexPool({"gpus": [0, 1, 2]})
    a = pool.take({"gpus": 2})
    b = pool.take({"gpus": 1, "licenses": 1})
    assert sorted(a["gpus"] + b["gpus"]) == [0, 1, 2]
    assert pool.take({"licenses": 1}) is None  # not indexed: nothing to hold
    pool.give(a)
    assert sorted(pool.take({"gpus": 2})["gpus"]) == sorted(a["gpus"])
    env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    set_task_env(env, {"gpus": [1, 3]}, "nvidia")
    assert env == {"HPCQUEUE_RESOURCE_GPUS": "1,3", "CUDA_VISIBLE_DEVICES": "1,3"}
    env = {"HIP_VISIBLE_DEVICES": "0"}  # relative to ROCR's: dropped
    set_task_env(env, {"gpus": [1]}, "amd")
    assert env == {"HPCQUEUE_RESOURCE_GPUS": "1", "ROCR_VISIBLE_DEVICES": "1"}
    env = {}
    set_task_env(env, {"fpga.x": [0]}, "nvidia")
    assert env == {"HPCQUEUE_RESOURCE_FPGA_X": "0"}


def test_tasks_get_gpu_indices_of_their_own(cluster, tmp_path):
    cluster.start_server()
    cluster.start_worker("--cpus", "6", "--resource", "gpus=[0,1]")
    log = tmp_path / "log"
    cluster.hq("submit", "--array", "1-6", "--resource", "gpus=1", "--stdout", "none", "--",
               "sh", "-c", f'echo "start $HPCQUEUE_TASK_ID $CUDA_VISIBLE_DEVICES '
                           f'$HPCQUEUE_RESOURCE_GPUS" >> {log}; sleep 0.4; '
                           f'echo "end $HPCQUEUE_TASK_ID $CUDA_VISIBLE_DEVICES" >> {log}')
    cluster.hq("job", "wait", "1", timeout=60)
    held: dict[str, str] = {}  # index -> task holding it
    most = 0
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 12, events
    for what, task, idx, *rest in events:
        assert idx in ("0", "1"), events
        if what == "start":
            assert rest == [idx], events  # HPCQUEUE_RESOURCE_GPUS says the same
            assert idx not in held, f"task {task} got GPU {idx} held by {held.get(idx)}"
            held[idx] = task
            most = max(most, len(held))
        else:
            assert held.pop(idx) == task
    assert most == 2  # two at a time


def test_worker_offers_the_gpus_nvidia_smi_lists(cluster, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(
        f'echo "GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-{i}aa)"\n' for i in range(4)))
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    for var in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
        monkeypatch.delenv(var, raising=False)
    cluster.start_server()
    cluster._spawn(["worker", "start"], "worker.log",
                   env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    wait_for(cluster.workers, what="the worker")
    info = json.loads(cluster.hq("worker", "info", "1", "--output", "json").stdout)
    assert info["resources"] == {"gpus": [0, 1, 2, 3]}
    assert "gpus=[0,1,2,3]" in cluster.hq("worker", "info", "1").stdout


def test_bad_worker_resource_is_one_clear_line(cluster):
    cluster.start_server()
    p = cluster.hq("worker", "start", "--resource", "gpus=[0,a]", check=False)
    one_clear_line(p, "gpus=[0,a]")


def test_a_count_of_gpus_takes_the_first_gpus_found():
    env = {"CUDA_VISIBLE_DEVICES": "4,5,6"}
    assert worker_gpus({"gpus": 2}, {}, env) == ("nvidia", {"gpus": 2}, {"gpus": [4, 5]})
    assert worker_gpus({}, {}, env) == ("nvidia", {"gpus": 3}, {"gpus": [4, 5, 6]})
    # given indices win; too few found: counted only, as before
    assert worker_gpus({"gpus": 1}, {"gpus": [7]}, env)[2] == {"gpus": [7]}
    assert worker_gpus({"gpus": 4}, {}, env)[1:] == ({"gpus": 4}, {})
    assert worker_gpus({"gpus": 1}, {}, {"ROCR_VISIBLE_DEVICES": "1"})[0] == "amd"
