"""CI: what a fresh ``pip install '.[all]'`` would install, resolved for real (pip's dry
run into an empty target, ignoring what is installed), must hold no CUDA build: no
``nvidia-*`` or ``triton`` package, and torch only as a ``+cpu`` build. Prints the list."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
        cmd = [*pip, "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
               ".[all]"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-2000:], file=sys.stderr)
            print("error: pip could not resolve '.[all]'", file=sys.stderr)
            return 1
        data = json.loads(report.read_text())
    found = sorted(
        (i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in data["install"]
    )
    bad = [
        f"{n}=={v}"
        for n, v in found
        if n.startswith("nvidia-") or n == "triton" or (n == "torch" and "+cpu" not in v)
    ]
    print(f"pip install '.[all]' would install {len(found)} packages:")
    print("  " + ", ".join(f"{n}=={v}" for n, v in found))
    if bad:
        print(f"error: CUDA builds in '.[all]': {', '.join(bad)}", file=sys.stderr)
        return 1
    print("no CUDA build among them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
