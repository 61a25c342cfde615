"""docker-compose.yml: Debian's docker-compose accepts it, and every command in it is a real ``sweep`` command."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from tests.procs import ROOT, env, study_file, sweep, trials

COMPOSE = ROOT / "docker-compose.yml"


def _interpolate(text: str, values: dict[str, str]) -> str:
    """Compose's ${NAME:-default} and ${NAME:?message}, enough for our file."""
    def sub(m: re.Match[str]) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if name in values:
            return values[name]
        if op == ":-":
            return rest
        raise KeyError(name)

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", sub, text)


def _services(values: dict[str, str]) -> dict[str, dict]:
    return yaml.safe_load(_interpolate(COMPOSE.read_text(), values))["services"]


def _compose_config(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (apt-get install -y docker-compose)")
    e = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "DASHBOARD_"))} | extra
    # --project-directory: a tmp folder, so a developer's real .env is not read.
    return subprocess.run(["docker-compose", "-f", str(COMPOSE), "--project-directory", str(tmp_path), "config"],
                          env=e, capture_output=True, text=True, timeout=60)


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    out = _compose_config(tmp_path, POSTGRES_PASSWORD="pw")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert {"postgres", "dashboard", "worker", "submit"} <= set(services)
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published)  # nothing beyond localhost
    assert services["postgres"]["healthcheck"]["test"][0] == "CMD-SHELL"
    assert services["worker"]["environment"]["SWEEP_STORAGE"] == "postgresql+psycopg://sweep:pw@postgres:5432/sweep"


def test_docker_compose_refuses_to_start_without_a_password(tmp_path: Path) -> None:
    out = _compose_config(tmp_path)
    assert out.returncode == 1
    assert "set it in .env" in out.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _screenshot(url: str, path: Path) -> str:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000"):
        opts.add_argument(arg)
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(url)
        WebDriverWait(driver, 60).until(lambda d: "Trial 2" in d.find_element(By.TAG_NAME, "body").text)
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
        return driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.browser
@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_compose_commands_run_natively(tmp_path: Path, storage_url: str) -> None:
    """submit, worker and dashboard exactly as the compose file runs them, against the test database."""
    port = _free_port()
    study = study_file(tmp_path, "composed", n_trials=3)
    services = _services({"POSTGRES_PASSWORD": "unused", "SWEEP_STUDY_FILE": str(study)})
    commands = {name: s["command"] for name, s in services.items() if s.get("command", [""])[0] == "sweep"}
    assert set(commands) == {"dashboard", "worker", "worker-gpu", "submit"}
    assert commands["worker-gpu"] == commands["worker"]

    submit = subprocess.run(sweep(*commands["submit"][1:]), env=env(storage_url), cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert (submit.returncode, submit.stdout) == (0, "composed\n"), submit.stderr

    # The worker polls with --wait: stop it with SIGTERM (docker compose stop) once the study is done.
    worker = subprocess.Popen(sweep(*commands["worker"][1:]), env=env(storage_url), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and "refit" not in optuna.load_study(
            study_name="composed", storage=storage_url).user_attrs:
        assert worker.poll() is None, worker.communicate()
        time.sleep(0.5)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 128 + signal.SIGTERM
    assert out == "worker ran 3 trials; studies at target: composed; refits: composed\n"
    assert err.splitlines()[-1] == "error: stopped by SIGTERM between trials"
    assert [t.state.name for t in trials(storage_url, "composed")] == ["COMPLETE"] * 3

    # The dashboard binds 0.0.0.0 inside its container; here it stays on 127.0.0.1.
    dash_args = [a.replace("0.0.0.0", "127.0.0.1").replace("8080", str(port)) for a in commands["dashboard"][1:]]
    dash = subprocess.Popen(sweep(*dash_args), env=env(storage_url), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                assert dash.poll() is None and time.monotonic() < deadline, dash.communicate()
                time.sleep(0.5)
        assert [s["study_name"] for s in studies] == ["composed"]
        if shutil.which("chromedriver") is None:
            pytest.skip("chromedriver is not installed (apt-get install -y chromium chromium-driver)")
        text = _screenshot(f"{base}/dashboard/studies/{studies[0]['study_id']}/trials",
                           ROOT / "artifacts" / "dashboard-trials.png")
        assert "3 Trials" in text and all(f"Trial {i}" in text for i in range(3))
    finally:
        dash.send_signal(signal.SIGTERM)
        dash.wait(timeout=30)
