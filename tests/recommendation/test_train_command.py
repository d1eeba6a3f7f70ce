"""`vitrine train` against a real in-process recommendation service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.recommendation.conftest import Harness, sessions
from vitrine.cli import main
from vitrine.v1 import recommend_pb2


async def _cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_train_from_a_sessions_file(empty: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "sessions.txt"
    lines = ["# a comment", ""] + [" ".join(s) for s in sessions(400)]
    path.write_text("\n".join(lines) + "\n")
    code = await _cli("train", "--sessions", str(path), "--address", empty.address, "--dimensions", "8")
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "model_version " in out.out and "items 240" in out.out and "read 400 sessions" in out.err
    info = await empty.stub.GetModelInfo(recommend_pb2.GetModelInfoRequest(), timeout=5)
    assert info.products == 240 and info.dimensions == 8 and info.model_version in out.out


async def test_train_reports_errors(empty: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await _cli("train", "--sessions", str(tmp_path / "missing.txt"), "--address", empty.address) == 2
    path = tmp_path / "one.txt"
    path.write_text("lonely\n")
    assert await _cli("train", "--sessions", str(path), "--address", empty.address) == 1
    assert "FAILED_PRECONDITION" in capsys.readouterr().err
    info = await empty.stub.GetModelInfo(recommend_pb2.GetModelInfoRequest(), timeout=5)
    assert info.products == 0  # nothing was created
