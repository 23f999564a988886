#!py
"""Rehearsal-lab overrides: each host's loopback address and filesystem root, and the sha256
of the lab-built archives. Only a master whose config sets `lab_dir` (etc/salt/master) has a
lab; elsewhere this adds nothing, so production sees only inventory.sls and release.sls."""

import os

import yaml


def run():
    lab_dir = __opts__.get("lab_dir")
    if not lab_dir:
        return {}
    path = os.path.join(os.path.abspath(lab_dir), "pillar.yaml")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}
