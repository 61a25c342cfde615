"""Reports in a real headless Chromium (selenium + chromedriver), and the PNG through kaleido.

Skipped, with the reason, only where Chromium or chromedriver is absent; CI installs both.
Screenshots go to artifacts/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from sweep import config
from sweep.cli import main
from sweep.workers.run import run as run_study
from tests.conftest import make_raw
from tests.report.test_report import EVIL, make_fake

CHROMIUM = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs chromium and chromedriver (apt-get install chromium chromium-driver)"),
]


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1200,1000"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    yield drv
    drv.quit()


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A real finished tiny study: 4 grid lambdas, 1 epoch on mnist-sample, refit at lambda_min."""
    url = f"sqlite:///{tmp_path_factory.mktemp('browser') / 'sweeps.db'}"
    raw = make_raw(name="tiny", search={"sampler": "grid", "n_trials": 4, "pruner": "none"}, train={"epochs": 1})
    cfg = config.validate(raw, source="test")
    run_study(cfg, url)
    return url, "tiny"


def _open(driver: Any, path: Path) -> list[dict[str, Any]]:
    driver.get(path.resolve().as_uri())
    driver.execute_script("return 1")  # page scripts have run once get() returns
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


# Points drawn in the SVG for the trials trace of the accuracy-vs-lambda chart (traces keep data order).
COUNT_POINTS = """
const gd = document.getElementById('accuracy-vs-lambda');
const i = gd.data.findIndex(t => t.meta && t.meta.role === 'trials');
const layer = gd.querySelectorAll('.scatterlayer .trace')[i];
return [gd.data[i].x.length, layer.querySelectorAll('path.point').length];
"""


def test_report_opens_without_errors_and_draws_every_trial(driver: Any, finished: tuple[str, str], tmp_path: Path) -> None:
    url, name = finished
    out = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["report", name, "--storage", url, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert _open(driver, out) == []
    assert driver.execute_script(COUNT_POINTS) == [4, 4]
    charts = driver.execute_script("return [...document.querySelectorAll('.js-plotly-plot')].map(d => d.id)")
    assert charts == ["accuracy-vs-lambda", "train-vs-val", "optimization-history", "learning-curves-0"]
    ARTIFACTS.mkdir(exist_ok=True)
    assert driver.save_screenshot(str(ARTIFACTS / "report-browser.png"))


def test_escaped_study_name_shows_as_text(driver: Any, sqlite_url: str, tmp_path: Path) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    make_fake(sqlite_url, EVIL)
    out = tmp_path / "evil.html"
    res = CliRunner().invoke(main, ["report", EVIL, "--storage", sqlite_url, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert _open(driver, out) == []
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - reading it is what raises
    assert driver.execute_script("return document.querySelector('h1').textContent") == f"lambda-sweep report: {EVIL}"
    assert driver.execute_script("return document.querySelector('#summary tbody td').textContent") == EVIL
    title = driver.execute_script("return document.querySelector('#accuracy-vs-lambda .gtitle').textContent")
    assert title == f"Validation accuracy against lambda — {EVIL}"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "report-escaped.png"))


def test_png_of_the_main_chart(finished: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url, name = finished
    monkeypatch.setenv("BROWSER_PATH", str(CHROMIUM))
    png = tmp_path / "chart.png"
    res = CliRunner().invoke(main, ["report", name, "--storage", url, "-o", str(tmp_path / "r.html"), "--png", str(png)])
    assert (res.exit_code, res.output.splitlines()[-1]) == (0, f"wrote {png}")
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width = int.from_bytes(head[16:20], "big")
    assert width == 1650  # 1100 px at scale 1.5


# For each role: whether its trace drew a filled area or a line with a non-empty SVG path.
DRAWN = """
const gd = document.getElementById('accuracy-vs-lambda');
const layers = gd.querySelectorAll('.scatterlayer .trace');
const out = {};
gd.data.forEach((t, i) => {
  if (!t.meta) return;
  const paths = [...layers[i].querySelectorAll('path.js-fill, path.js-line')].map(p => p.getAttribute('d') || '');
  out[t.meta.role] = paths.some(d => d.length > 10);
});
return out;
"""


def test_plausible_band_smoothed_curve_and_every_rule_are_drawn(driver: Any, finished: tuple[str, str],
                                                                 tmp_path: Path) -> None:
    from sweep.selection import RULES, best_record

    url, name = finished
    out = tmp_path / "uncertainty.html"
    assert CliRunner().invoke(main, ["report", name, "--storage", url, "-o", str(out)]).exit_code == 0
    assert _open(driver, out) == []
    drawn = driver.execute_script(DRAWN)
    assert (drawn["plausible"], drawn["smooth-band"], drawn["smooth"]) == (True, True, True)
    assert {f"choice-{rule}" for rule in RULES} <= drawn.keys()
    rec = best_record(name, storage=url)
    cells = driver.execute_script("""
        const heads = [...document.querySelectorAll('#summary th')].map(th => th.textContent);
        const cells = [...document.querySelectorAll('#summary tbody td')].map(td => td.textContent);
        return Object.fromEntries(heads.map((h, i) => [h, cells[i]]));""")
    assert cells["plausible range"] == f"{rec.plausible_low:.3g} – {rec.plausible_high:.3g}"
    assert cells["lambda smooth"] == f"{rec.lam_smooth:.3g}"
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / "report-uncertainty.png"))
