"""The run report: one self-contained HTML page per run folder (common/run_report.py)."""

import base64
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from client.client_app import app as client_app
from common.audit.cli import audit_egress
from common.config import load_config
from common.results import RunFolder, load_summary
from common.run_report import REPORT, byte_size, write_run_report
from server.run.federation import FederatedRun
from server.run.inprocess import InProcessGrid


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        for name, value in attrs:
            if name == "src" and value:
                self.images.append(value)
            if name in ("href", "src") and value and not value.startswith("data:"):
                self.links.append(value)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


ARTIFACTS = Path(
    os.environ.get("FEDREPLAY_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts")
)


def small_run(tmp_path: Path) -> Path:
    cfg = load_config(
        {
            "train.iterations": 10,
            "tasks.num-tasks": 2,
            "fed.num-sites": 2,
            "generator.quality": False,
            "output-dir": str(tmp_path / "runs"),
        }
    )
    grid = InProcessGrid(client_app, cfg.to_run_config(), num_nodes=2)
    return FederatedRun(cfg).run(grid).path


def test_every_run_writes_a_page_that_needs_no_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDREPLAY_SITE_DIR", str(tmp_path / "sites"))
    run = small_run(tmp_path)
    page = parse(run / REPORT)
    assert "script" not in page.tags and page.links == [], "nothing to fetch from a network"
    assert len(page.images) >= 4  # curves, matrix, rounds, samples
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(page.text)
    summary = load_summary(run)
    assert f"{100 * summary['final_average_accuracy']:.1f}%" in text
    assert "Egress audit: not run" in text and "No differential privacy" in text
    # the outcome says the guarantee, the newest task, where the result came from; every
    # site has a row with what it did
    assert "no differential privacy" in text and "newest task's accuracy" in text
    provenance = summary["provenance"]
    assert provenance["flwr"] == "1.41.0" and provenance["commit"]
    assert f"fedreplay {provenance['fedreplay']} (commit {provenance['commit']})" in text
    assert set(summary["sites"]) == {"site-0", "site-1"}
    assert summary["tasks"][:2] == ["0, 1", "2, 3"]  # digits: the class names are the digits
    assert "tasks (classes)" in text and "1: 0, 1 · 2: 2, 3" in text
    assert all(row["outcome"] == "trained" for row in summary["sites"].values())
    assert "site-0" in text and "suspicion" in text
    # the settings this run changed, as a user types them, beside their defaults
    config = (run / REPORT).read_text().split("<h2>Configuration</h2>")[1]
    changed = config.split("<details>")[0]
    assert "differ from the defaults" in changed
    assert "train.iterations" in changed and "output-dir" in changed
    assert "train.batch-size" not in changed and "train.batch-size" in config
    # TensorBoard reads the run folder: its own reader finds the round accuracies of
    # rounds.jsonl and the tasks' averages of the summary
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    board = EventMultiplexer()
    board.AddRunsFromDirectory(str(run))
    board.Reload()
    (name,) = board.Runs()
    logged = {e.step: e.value for e in board.Scalars(name, "round/accuracy")}
    rounds = {r["round"]: r["accuracy"] for r in RunFolder(run).read_jsonl("rounds.jsonl")}
    assert logged.keys() == rounds.keys()
    assert all(abs(logged[k] - rounds[k]) < 1e-6 for k in rounds)
    averages = [e.value for e in board.Scalars(name, "task/average-accuracy")]
    assert averages == pytest.approx(summary["average_accuracy_per_task"], abs=1e-6)
    trained = [e.value for e in board.Scalars(name, "round/sites-trained")]
    assert trained == [2.0] * len(rounds)
    # an egress audit that finds no logs says where it looked, exits 2 and writes nothing
    from common.audit import cli as audit_cli

    code = audit_cli.main(["egress", str(run), "--sites-dir", str(tmp_path / "elsewhere")])
    err = capsys.readouterr().err
    assert code == 2 and "no egress logs of run" in err and str(tmp_path / "elsewhere") in err
    assert "Traceback" not in err and not (run / "egress_audit.json").exists()

    # the audit needs only the run folder and the logs, not the data (a folder dataset at
    # the sites): the input shape comes from summary.json
    def no_data(cfg):  # type: ignore[no-untyped-def]
        raise AssertionError("the egress audit read the data")

    monkeypatch.setattr("common.data.streams.build_stream", no_data)  # imported when needed
    # after the egress audit, the page says what it found
    before = (run / REPORT).read_text().split("<h2>Sites</h2>")[1].split("<h2>")[0]
    assert "messages (its log)" in before and "fedreplay audit egress</code> read it" in before
    audit_egress(run, sites_dir=tmp_path / "sites", run_id=None)
    page_html = write_run_report(run).read_text()
    text = " ".join(parse(run / REPORT).text)
    assert "nothing left a site that the protocol does not allow" in text
    # each site's row now says what its own log recorded sending
    logged = json.loads((run / "egress_audit.json").read_text())["sites"]
    sites_html = page_html.split("<h2>Sites</h2>")[1].split("<h2>")[0]
    for site in ("site-0", "site-1"):
        row = next(r for r in sites_html.split("<tr>") if f">{site}</td>" in r)
        own = (
            f"<td>{logged[site]['messages']}</td><td>{byte_size(logged[site]['total_bytes'])}</td>"
        )
        assert logged[site]["messages"] > 0 and own in row, row


def test_a_folder_without_a_summary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no readable summary\.json"):
        write_run_report(tmp_path)


@pytest.fixture
def chromium() -> None:
    """A browser to drive: required in CI (.ci/run installs it), skipped elsewhere without."""
    from browser import find_chromium

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have a browser: .ci/run installs Debian's chromium")
        pytest.skip("no chromium installed (apt install chromium, or FEDREPLAY_BROWSER)")


def test_the_page_renders_in_a_real_browser(tmp_path: Path, chromium: None) -> None:
    """Headless chromium opens report.html: it loads, every image decodes, nothing is
    logged as an error; the screenshot is kept (test-artifacts/, or
    $FEDREPLAY_TEST_ARTIFACTS). CI installs chromium; elsewhere the test needs one."""
    from browser import Browser

    run = small_run(tmp_path)
    with Browser() as browser:
        page = browser.open(run / REPORT)
        title = page.evaluate("document.title")
        images = page.images
        text = page.evaluate("document.body.innerText")
        shot = page.screenshot(ARTIFACTS / "report.png")
        errors = page.errors
    summary = load_summary(run)
    assert title == f"{summary['experiment']}: {summary['method']}"
    assert len(images) >= 4
    assert all(src.startswith("data:image/png") for src, _, _ in images)
    broken = [(src, ok, width) for src, ok, width in images if not ok or width == 0]
    assert broken == [], f"images that did not load: {broken}"
    assert errors == [], errors
    assert f"{100 * summary['final_average_accuracy']:.1f}%" in text
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000, "an empty screenshot"


def test_the_browser_check_sees_a_broken_image(tmp_path: Path, chromium: None) -> None:
    """The browser test can fail: a page with a corrupt image and a script error."""
    from browser import Browser

    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><img src="data:image/png;base64,AAAA">'
        "<script>console.error('boom'); undefinedThing();</script></body></html>"
    )
    with Browser() as browser:
        page = browser.open(bad)
        images = page.images
        errors = page.errors
    assert images and images[0][2] == 0  # naturalWidth 0: not decoded
    assert any("boom" in e for e in errors) and any("exception" in e for e in errors)
