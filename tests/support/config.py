"""Configuration files written for a test and read as the gateway reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError
from gateway.settings import Settings


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return [str(p) for p in caught.value.problems]


def parse(tmp_path: Path, text: str) -> Settings:
    return load_config(write(tmp_path, text))
