"""The formatting helpers of ``cpmc_lib.report.text``: numbers, verbs for a change, Markdown tables."""

from cpmc_lib.report import fmt, markdown_table


def test_markdown_table_formats_and_fills_missing():
    table = markdown_table([{"a": 1.234, "b": "x"}, {"a": float("nan")}], ["a", "b"])
    lines = table.splitlines()
    assert lines[0] == "| a | b |"
    assert lines[2] == "| 1.2 | x |"
    assert lines[3] == "| – | – |"
    assert fmt(3) == "3" and fmt(0.456, 2) == "0.46"


def test_direction_follows_the_sign():
    from cpmc_lib.report import direction

    assert (
        direction(0.08) == "raises" and direction(-0.08) == "lowers" and direction(0.0) == "leaves unchanged"
    )
    assert direction(0.3, up="helps", down="hurts", flat="does nothing", tol=0.5) == "does nothing"
    assert direction(-0.6, up="helps", down="hurts", tol=0.5) == "hurts"
    assert direction(float("nan")) == "leaves unchanged"
    assert (
        direction(0.004, digits=2) == "leaves unchanged" and direction(0.02, digits=1) == "leaves unchanged"
    )
    assert direction(0.06, digits=1) == "raises"


def test_compare_follows_the_printed_numbers():
    from cpmc_lib.report import compare

    assert compare(0.14, 0.16, digits=1) == "raises"  # prints 0.1 -> 0.2
    assert compare(7.52, 7.48, digits=1) == "leaves unchanged"  # prints 7.5 -> 7.5
    assert compare(80.3, 73.9, up="helps", down="hurts") == "hurts"
