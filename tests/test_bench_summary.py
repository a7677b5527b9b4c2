"""The benchmark's summary (bench/__main__.py): running one suite keeps the others' last
figures in ``summary.md``, each with the time it was run."""

from __future__ import annotations

import json
from pathlib import Path

import bench.__main__ as bench_main
from bench.suites import Metric, Result


def _suite(name: str, value: float):
    def run(ref: float) -> Result:
        return Result(name, f"The {name} suite.", ref, (Metric(f"{name}_error", value, "px"),))

    run.__doc__ = f"The {name} suite."
    return run


def test_one_suite_run_keeps_the_other_suites_in_the_summary(tmp_path: Path, monkeypatch) -> None:
    """Suites ``alpha`` and ``beta``: beta ran earlier (its file holds 2.5 px, written
    2026-01-02 03:04); running alpha alone writes alpha.json with its run time and a
    summary with both, each under its own time, in the suites' order. A file that cannot
    be read is left out of the summary, not fatal."""
    monkeypatch.setattr(bench_main, "SUITES", {"alpha": _suite("alpha", 1.5),
                                               "beta": _suite("beta", 9.0),
                                               "gamma": _suite("gamma", 0.0)})  # fmt: skip
    monkeypatch.setattr(bench_main, "reference_seconds", lambda: 0.25)
    earlier = {**_suite("beta", 2.5)(0.5).to_json(), "written": "2026-01-02 03:04"}
    (tmp_path / "beta.json").write_text(json.dumps(earlier))
    (tmp_path / "gamma.json").write_text("{not json")

    assert bench_main.main(["alpha", "--out", str(tmp_path)]) == 0

    alpha = json.loads((tmp_path / "alpha.json").read_text())
    assert alpha["metrics"] == [{"name": "alpha_error", "value": 1.5, "unit": "px", "note": ""}]
    assert alpha["reference_s"] == 0.25 and len(alpha["written"]) == len("2026-01-02 03:04")
    summary = (tmp_path / "summary.md").read_text()
    assert summary.index("## alpha") < summary.index("## beta")
    assert "| alpha_error | 1.5 | px |  |" in summary
    assert "| beta_error | 2.5 | px |  |" in summary
    assert f"Run {alpha['written']}." in summary and "Run 2026-01-02 03:04." in summary
    assert "## gamma" not in summary
    assert json.loads((tmp_path / "beta.json").read_text()) == earlier  # untouched
