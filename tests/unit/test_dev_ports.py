"""The port rule of `twoway dev`: an explicit setting wins; a remembered port only stands in for an unset one."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from twoway.dev import DevSystem
from twoway.kit.embedded import free_port
from twoway.settings import Settings


def _system(tmp_path: Path, **settings: object) -> DevSystem:
    return DevSystem(state=tmp_path, settings=Settings(**settings))  # type: ignore[arg-type]


@pytest.mark.parametrize("name, field, default", [("api.port", "api_port", 8000),
                                                  ("worker-metrics.port", "worker_metrics_port", 9464)])
def test_explicit_beats_remembered(tmp_path: Path, name: str, field: str, default: int) -> None:
    remembered, explicit = free_port(), free_port()
    (tmp_path / name).write_text(str(remembered))
    system = _system(tmp_path, **{field: explicit})
    assert system._pick_port(name, system._explicit(field), default) == explicit
    assert (tmp_path / name).read_text() == str(remembered)


def test_remembered_stands_in_for_unset(tmp_path: Path) -> None:
    remembered = free_port()
    (tmp_path / "api.port").write_text(str(remembered))
    system = _system(tmp_path)
    assert system._explicit("api_port") is None  # the default 8000 is not a setting
    assert system._pick_port("api.port", system._explicit("api_port"), 8000) == remembered


def test_busy_remembered_port_falls_back_and_is_remembered(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        (tmp_path / "emulator.port").write_text(str(taken))
        port = _system(tmp_path)._pick_port("emulator.port", None, taken)
    assert port != taken
    assert (tmp_path / "emulator.port").read_text() == str(port)


def test_busy_explicit_port_is_an_error_not_a_silent_move(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("twoway.dev.PORT_FREE_GRACE_SECONDS", 0.2)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        system = _system(tmp_path, api_port=taken)
        with pytest.raises(SystemExit, match=str(taken)):
            system._pick_port("api.port", system._explicit("api_port"), 8000)
