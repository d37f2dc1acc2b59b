"""The docs cover what the binary offers, and their links lead somewhere."""

import re
import subprocess

from conftest import BINARY, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_flag_of_the_daemon_is_documented():
    help_text = subprocess.run([str(BINARY), "--help"], capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"--[a-z][a-z0-9-]+", help_text)) - {"--help", "--version"}
    docs = "\n".join(p.read_text() for p in PAGES)
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![a-z0-9-])", docs))
    assert not missing, f"flags in tensord --help that no page names: {missing}"


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken
    assert len(PAGES) >= 11
