"""The system-package helper: a missing part skips with one line, and fails under CI."""
import pytest

from tests import system_packages as sp


@pytest.fixture
def absent(monkeypatch):
    part = sp.Part("frobnicator", "frob-utils", "frobbing the tests", command="digitpipe-no-such-command")
    monkeypatch.setitem(sp.BY_NAME, part.name, part)
    return part


def test_a_missing_part_skips_naming_it_and_the_install_command(absent, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception) as skipped:
        sp.require("frobnicator", "Fashion-MNIST")
    line = str(skipped.value)
    assert "\n" not in line and "frobnicator" in line and "apt-get install -y --no-install-recommends frob-utils" in line


def test_under_ci_a_missing_part_fails(absent, monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI: needs frobnicator"):
        sp.require("frobnicator")


def test_present_parts_pass_and_every_part_has_a_check():
    sp.require()  # nothing asked, nothing missing
    for part in sp.PARTS:
        assert sum(bool(x) for x in (part.command, part.path, part.library)) == 1, part
