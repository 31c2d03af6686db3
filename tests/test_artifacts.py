"""Stage commits are atomic and fingerprinted: a failed build leaves nothing, a matching marker skips."""

from __future__ import annotations

import pytest

from distill import artifacts


def test_commit_publishes_with_marker(tmp_path):
    stage = tmp_path / "run" / "verify"
    m = artifacts.commit_stage(stage, "abc", lambda d: (d / "x.txt").write_text("1") and {"rows": 1})
    assert (stage / "x.txt").read_text() == "1"
    assert m["stats"] == {"rows": 1} and artifacts.is_done(stage, "abc") and not artifacts.is_done(stage, "abd")


def test_failed_build_leaves_previous_artifact_and_no_temp(tmp_path):
    stage = tmp_path / "verify"
    artifacts.commit_stage(stage, "v1", lambda d: (d / "x.txt").write_text("old") and None)

    def boom(d):
        (d / "x.txt").write_text("half")
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        artifacts.commit_stage(stage, "v2", boom)
    assert (stage / "x.txt").read_text() == "old" and artifacts.is_done(stage, "v1")
    assert [p.name for p in tmp_path.iterdir()] == ["verify"]


def test_fingerprint_changes_with_any_part():
    a = artifacts.fingerprint("train", {"lr": 1e-4}, "up")
    assert a == artifacts.fingerprint("train", {"lr": 1e-4}, "up")
    assert a != artifacts.fingerprint("train", {"lr": 2e-4}, "up")
    assert a != artifacts.fingerprint("train", {"lr": 1e-4}, "up2")
