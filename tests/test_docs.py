"""The product documentation holds together: every relative link in the README and docs/
leads to a file that exists, and the README stays a short product page (issue 35)."""

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def test_every_relative_link_in_the_docs_resolves() -> None:
    dead = []
    for page in _pages():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                dead.append(f"{page.relative_to(REPO)} -> {target}")
    assert not dead, "dead links:\n" + "\n".join(dead)


def test_the_readme_is_a_short_product_page() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; details go to docs/"


def _results_table():  # simulations/ is not a package: load the script as a module
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "results_table", REPO / "simulations" / "results_table.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["results_table"] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def test_the_results_tables_are_what_the_benchmarks_json_gives() -> None:
    """README's results table and docs/results.md are generated from the JSON that
    docs/results/index.toml names (issue 35): a figure typed by hand fails here."""
    assert _results_table().main(["--check"]) == 0, "run python simulations/results_table.py"


def test_a_hand_edited_figure_or_an_ambiguous_source_is_caught(tmp_path, monkeypatch) -> None:
    rt = _results_table()
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    edited = tmp_path / "README.md"
    edited.write_text(readme.replace("| 93.8 ± 0.5% |", "| 95.8 ± 0.5% |"), encoding="utf-8")
    assert edited.read_text(encoding="utf-8") != readme
    monkeypatch.setattr(rt, "README", edited)
    assert rt.main(["--check"]) == 1
    runs = tmp_path / "runs.json"
    runs.write_text('[{"seed": 0, "final": 80.0}, {"seed": 0, "final": 81.0}]', encoding="utf-8")
    import pytest

    with pytest.raises(rt.ResultsError, match="2 entries match"):
        rt.read_run("runs.json#seed=0", tmp_path)
    assert rt.read_run("runs.json#final=81.0", tmp_path).accuracy == 81.0
