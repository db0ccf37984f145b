"""The documentation: the MkDocs site under docs/ builds with ``--strict`` (a link to a page or
an anchor that does not exist, or an image that is not there, fails the build), the README's
own links lead somewhere, and what the pages say about the code and the shipped files is so."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import yaml
from markdown.extensions.toc import slugify

from bridge.mintsoft.sync.scan import FIRST_RUN_BACK
from tests.support.docs import DOCS, README, ROOT, page, pages, section

MKDOCS = Path(sys.executable).with_name("mkdocs")


def _build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "-f", str(root / "mkdocs.yml"), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )


def _copy_of_the_site(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(DOCS, root / "docs")
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    return root


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    result = _build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "console" / "index.html").is_file()
    assert (tmp_path / "site" / "console" / "overview-laptop.png").is_file()


BROKEN = {
    "no-such-page.md": "[a page](no-such-page.md)",
    "#no-such-section": "[an anchor](receiver.md#no-such-section)",
    "no-such-screenshot.png": "![an image](console/no-such-screenshot.png)",
}


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    root = _copy_of_the_site(tmp_path)
    with (root / "docs" / "troubleshooting.md").open("a") as file:
        file.write("\n" + "\n\n".join(BROKEN.values()) + "\n")
    result = _build(root, tmp_path / "site")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    warnings = [line for line in said.splitlines() if "troubleshooting.md" in line]
    for target in BROKEN:
        assert any(target in line for line in warnings), (target, said)


def test_every_page_is_in_the_nav() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def listed(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, list):
            return [p for item in nav for p in listed(item)]
        if isinstance(nav, dict):
            return [p for value in nav.values() for p in listed(value)]
        return []

    pages = {str(p.relative_to(DOCS)) for p in DOCS.glob("**/*.md")}
    assert set(listed(config["nav"])) == pages


# --- the README ----------------------------------------------------------------------------


def _anchors(text: str) -> set[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, re.M)
    return {slugify(re.sub(r"[`*]", "", heading), "-") for heading in headings}


def test_every_link_of_the_readme_leads_somewhere() -> None:
    text = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(local) >= 20, local
    broken = []
    for link in local:
        path, _, anchor = link.partition("#")
        target = ROOT / path if path else README
        if not target.exists() or (anchor and anchor not in _anchors(target.read_text())):
            broken.append(link)
    assert not broken, broken


def test_the_readme_link_check_can_fail() -> None:
    assert "the-spool" in _anchors(page("receiver.md"))
    assert "no-such-section" not in _anchors(page("receiver.md"))


def test_the_readme_is_a_front_page() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    assert "make run" in text and "make test" in text
    for heading in ("## Set up", "## The first ten minutes", "## Troubleshooting"):
        assert heading in text.splitlines()
    assert (ROOT / "LICENSE").is_file() and "Apache License" in (ROOT / "LICENSE").read_text()


# --- what the pages say --------------------------------------------------------------------


def test_the_sync_page_says_where_a_first_sync_starts() -> None:
    words = {1: "one hour", 2: "two hours", 3: "three hours"}
    hours = FIRST_RUN_BACK / timedelta(hours=1)
    text = " ".join(section(page("sync.md"), "# Mintsoft sync: keeping every order").split())
    assert f"A first `sync` (no cursors in its state yet) starts {words[int(hours)]} back" in text
    assert "starts from now" not in text


def test_the_compose_section_names_every_development_secret() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    files = [Path(secret["file"]) for secret in compose["secrets"].values()]
    volumes = [v for s in compose["services"].values() for v in s.get("volumes", [])]
    files += [Path(v.split(":")[0]) for v in volumes if v.endswith(".conf:ro")]
    assert len(files) >= 5
    text = section(page("operations.md"), "## One box: Docker Compose")
    missing = [str(f) for f in files if f"`{(ROOT / f).resolve().relative_to(ROOT)}`" not in text]
    assert not missing, f"docs/operations.md does not say to change {missing}"
    assert "console" in text.split("```sh", 1)[1].split("```", 1)[0]


def test_every_repository_path_the_documentation_names_exists() -> None:
    generated = {"bench/results/"}  # written by `make bench`, not kept in git
    missing = []
    for path in pages():
        for named in re.findall(
            r"`((?:bridge|tests|bench|deploy|docs|\.ci)/[\w./@-]+)`", path.read_text()
        ):
            if named not in generated and not (ROOT / named).exists():
                missing.append(f"{path.name}: {named}")
    assert not missing, missing


def test_the_security_page_names_every_connection_out() -> None:
    ports = section(page("security.md"), "## Ports")
    rows = [line for line in ports.splitlines() if "BRIDGE_MINTSOFT_URL" in line]
    assert rows and "`sync`" in rows[0] and "`connect-actions`" in rows[0]
    assert any("BRIDGE_AMQP_URL" in line and "`sync`" in line for line in ports.splitlines())
