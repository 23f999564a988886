"""Runs last (file order): the lab's own down command stops every process it started."""

import psutil


def test_lab_down_leaves_no_process_and_no_port(lab):
    master_pid = lab._daemon_pid(lab.master_pidfile(), "salt-master")
    jvms = lab.lab_jvm_pids()
    assert master_pid and len(jvms) == 8
    lab.down(None)
    assert not psutil.pid_exists(master_pid)
    assert not any(psutil.pid_exists(pid) for pid in jvms)
    assert lab.lab_jvm_pids() == []
    for host in lab.load_hosts():
        assert lab._daemon_pid(lab.minion_pidfile(host["id"]), str(lab.minion_dir(host["id"]))) is None
    assert lab.listening_lab_ports() == []
