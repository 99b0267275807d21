"""`kill -9` part-way through `eda train-draft` (with checkpoints), `eda regenerate` and `eda export`, then the same
command again: the harness of `benchmarks/kill_points.py`, one seeded kill per command."""

from __future__ import annotations

import random

import pytest
from conftest import load_script

kills = load_script("benchmarks/kill_points.py")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill")
    kills.build_fixtures(root)
    return root


@pytest.mark.parametrize("command", kills.COMMANDS)
def test_a_rerun_after_kill_9_gives_the_uninterrupted_result(root, command):
    previous = kills.prepare_previous_export(root) if command == "export" else None
    reference = kills.reference_runs(command, root, root, count=1)
    assert reference["reference"] is not None
    delay = random.Random(command).uniform(*reference["window_s"])
    point = kills.kill_and_rerun(command, root, root, f"{command}-killed", delay, reference["reference"], previous)
    assert point.passed, point
