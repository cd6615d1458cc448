"""The strict config loader: duplicate keys refused, syntax errors located, key lines recorded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from effbench.config import ConfigError
from effbench.config.yaml_strict import Locations, load_files, load_text, main

ROOT = Path(__file__).resolve().parents[2]


def test_loads_what_safe_load_loads():
    for name in ("config.yaml", "paper.yaml"):
        text = (ROOT / "config" / name).read_text()
        assert load_text(text, name)[0] == yaml.safe_load(text)


def test_a_duplicate_key_names_both_places():
    with pytest.raises(ConfigError, match=r"^c\.yaml:4:3: duplicate key `a\.b` \(first at c\.yaml:2:3\)"):
        load_text("a:\n  b: 1\n  c: 2\n  b: 3\n", "c.yaml")


def test_equal_keys_in_different_mappings_are_fine():
    data, _ = load_text("a: {x: 1}\nb: {x: 2}\nl: [{x: 1}, {x: 2}]\n", "c.yaml")
    assert data == {"a": {"x": 1}, "b": {"x": 2}, "l": [{"x": 1}, {"x": 2}]}


def test_a_merge_key_may_be_overridden():
    data, _ = load_text("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  x: 3\n", "c.yaml")
    assert data["d"] == {"x": 3, "y": 2}


def test_a_syntax_error_is_one_line_with_file_line_and_column():
    with pytest.raises(ConfigError) as e:
        load_text("a: 1\nb: [1,\n", "c.yaml")
    assert str(e.value).startswith("c.yaml:3:1: YAML syntax error")
    assert "\n" not in str(e.value)


def test_json_that_yaml_cannot_read_is_read_as_json():
    """Snakemake reads a config as JSON first: tab-indented JSON is a valid config file."""
    data, where = load_text('{\n\t"seed": 1,\n\t"results": "r"\n}\n', "c.json")
    assert data == {"seed": 1, "results": "r"} and where.lines == {}
    with pytest.raises(ConfigError, match=r"^c\.json: duplicate key `seed`"):
        load_text('{\n\t"seed": 1,\n\t"seed": 2\n}\n', "c.json")
    with pytest.raises(ConfigError, match=r"^c\.json:3:9: JSON syntax error: Expecting ':'"):
        load_text('{\n\t"seed": 1,\n\t"seed" 2\n}\n', "c.json")


def test_key_lines_are_recorded_and_later_files_win(tmp_path):
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("a:\n  b: 1\nsizes:\n  0.5b: {n: 1}\nl:\n  - x\n  - y\n")
    two.write_text("\na:\n  b: 2\n")
    where = load_files([one, two])
    assert where.of("a.b") == f"{two}:3"
    assert where.of("sizes.0.5b.n") == f"{one}:4"  # a name may hold a dot
    assert where.of("sizes.0.5b.missing") == f"{one}:4"  # the nearest written parent
    assert where.of("l.1") == f"{one}:7"
    assert where.of("nowhere") is None


def test_annotate_adds_the_place_of_the_first_known_key():
    where = Locations({"a.b": "c.yaml:2"})
    message = "invalid:\n  config key `a.b.c`: bad\n  config key `z`: bad"
    assert where.annotate(message) == "invalid:\n  config key `a.b.c`: bad [c.yaml:2]\n  config key `z`: bad"


def test_command_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: 1\na: 2\n")
    assert main([str(ROOT / "config" / "config.yaml"), str(bad)]) == 1
    assert f"{bad}:2:1: duplicate key `a`" in capsys.readouterr().err
    assert main([str(tmp_path / "absent.yaml")]) == 1
    run = subprocess.run([sys.executable, "-m", "effbench.config", str(bad)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert run.returncode == 1 and run.stderr == f"{bad}:2:1: duplicate key `a` (first at {bad}:1:1); " \
        "YAML would keep the last one silently\n"
