"""The system (Debian) packages the tests use, in one table.

`make test` runs this file first (`python3 tests/system_packages.py install`): it installs
what is missing when it can (root, or sudo without a password). The tests ask
`require(...)` for the parts they use: a missing part skips the test with one line naming
it and the command that installs it, and fails it under CI=true, where nothing may be
skipped for that reason. Standard library only: it runs before the venv exists.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    name: str  # what the tests call it
    package: str  # the Debian package that provides it
    purpose: str
    command: str = ""  # present when this is on PATH...
    path: str = ""  # ...or this exists...
    library: str = ""  # ...or the dynamic loader knows this library

    def present(self) -> bool:
        if self.command:
            return shutil.which(self.command) is not None
        if self.path:
            return os.path.exists(self.path)
        return self.library in _loader_cache()


PARTS = (
    Part("espeak-ng", "espeak-ng", "pyttsx3's speech engine (WAV tests)", command="espeak-ng"),
    Part("Xvfb", "xvfb", "a real display for the window tests", command="Xvfb"),
    Part("xwd", "x11-apps", "screenshots of that display", command="xwd"),
    Part("xdotool", "xdotool", "finding and keying run-digit's window", command="xdotool"),
    Part("Fashion-MNIST", "dataset-fashion-mnist", "Fashion-MNIST offline",
         path="/usr/share/datasets/fashion-mnist"),
    Part("libGL", "libgl1", "opencv-python's GUI", library="libGL.so.1"),
    Part("libglib", "libglib2.0-0", "opencv-python's GUI", library="libglib-2.0.so.0"),
)
BY_NAME = {p.name: p for p in PARTS}


def _loader_cache() -> str:
    try:
        return subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def missing(parts=PARTS) -> list[Part]:
    return [p for p in parts if not p.present()]


def install_command(parts) -> str:
    names = " ".join(sorted({p.package for p in parts}))
    return f"sudo apt-get install -y --no-install-recommends {names}"


def _privilege() -> list[str] | None:
    """[] as root, ["sudo", "-n"] where sudo needs no password, None where neither works."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


def install() -> int:
    """Install the missing parts where possible. Exit 0 when all are there or the tests may
    skip; 1 under CI=true when a part is still missing (the tests would fail anyway)."""
    need = missing()
    if need:
        prefix = _privilege()
        if prefix is None or not shutil.which("apt-get"):
            print(f"system packages: cannot install {', '.join(p.package for p in need)} here "
                  f"(needs root or sudo without a password, and apt-get); tests that use them are skipped. "
                  f"Install with: {install_command(need)}", file=sys.stderr)
        else:
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            print(f"system packages: installing {' '.join(p.package for p in need)}", file=sys.stderr)
            subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env, check=False)
            subprocess.run([*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends",
                            *sorted({p.package for p in need})], env=env, check=False)
            need = missing()
    if need and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        print(f"system packages: still missing under CI: {', '.join(p.package for p in need)}", file=sys.stderr)
        return 1
    return 0


def require(*names: str) -> None:
    """In a test: skip (or, under CI, fail) with one line when a named part is missing."""
    import pytest

    need = missing([BY_NAME[n] for n in names])
    if not need:
        return
    line = (f"needs {', '.join(p.name for p in need)} ({'; '.join(p.purpose for p in need)}); "
            f"install with: {install_command(need)}")
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI: {line}", pytrace=False)
    pytest.skip(line)


if __name__ == "__main__":
    if sys.argv[1:] == ["install"]:
        raise SystemExit(install())
    if sys.argv[1:] == ["check"]:
        for p in missing():
            print(f"missing: {p.name} (Debian package {p.package}): {p.purpose}")
        raise SystemExit(0)
    print("usage: python3 tests/system_packages.py install|check", file=sys.stderr)
    raise SystemExit(2)
