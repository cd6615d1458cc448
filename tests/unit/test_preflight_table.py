"""Every reason in the preflight table is shown in full (issue #23 item 7): neither the detail nor
the cell is cut, however long."""

from __future__ import annotations

from effbench.preflight.rows import ok, problem, skip, table


WHY = " ".join(["the reason goes on"] * 12)


def test_long_details_and_cells_are_printed_whole() -> None:
    detail = "versions checked: " + ", ".join(f"library{i} 1.{i}.0" for i in range(30))  # ~500 characters
    cell = "finetune dataset finetune.tasks." + "x" * 60  # longer than the 48-character column
    rows = [ok("environment", "finetune environment", detail), skip("memory", cell, WHY),
            problem("disk", "results", "short", "config key `results`")]
    text = table(rows)
    assert detail in text and cell in text and WHY in text
    assert "…" not in text
    lines = text.splitlines()
    assert lines[2].endswith(detail) and lines[3].endswith(WHY)
    # the short cells still line up
    assert lines[0].index("detail") == lines[2].index("versions checked")
