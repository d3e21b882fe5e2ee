"""Helpers of benchmarks/gpu_wheels.sh and benchmarks/gpu_check.sh (standard library only: the summary
runs with the GPU image's own Python, even when the offline install failed).

    python benchmarks/gpu_check.py requirements                  # what gpu_check.sh installs
    python benchmarks/gpu_check.py download-requirements DS.whl  # what gpu_wheels.sh downloads
    python benchmarks/gpu_check.py prune DIR NAME...             # drop wheels the image already has
    python benchmarks/gpu_check.py summary RUN_DIR               # the closing table of gpu_check.sh
"""

from __future__ import annotations

import argparse
import email.parser
import json
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The GPU image brings its own CUDA build of torch: never a requirement here, so pip cannot replace it.
IMAGE_TORCH = "torch"
# From the `test` extra, the test runner only (ruff and shellcheck lint on the development machine).
TEST_TOOLS = ("pytest",)
MLUKE_LARGE_MFU_GOAL = 0.45


def normalize(name: str) -> str:
    """PEP 503 project name: lower case, runs of -_. as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(req: str) -> str:
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
    if not m:
        raise ValueError(f"not a requirement: {req!r}")
    return normalize(m.group(1))


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """pyproject.toml's dependencies without torch, plus the test runner: what the GPU check needs."""
    import tomllib

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    deps = [r for r in project["dependencies"] if requirement_name(r) != IMAGE_TORCH]
    tests = [r for r in project["optional-dependencies"]["test"] if requirement_name(r) in TEST_TOOLS]
    return deps + tests


def wheel_requirements(wheel: Path) -> list[str]:
    """A wheel's unconditional Requires-Dist lines (extras left out)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        msg = email.parser.Parser().parsestr(z.read(meta).decode("utf-8"))
    return [r for r in msg.get_all("Requires-Dist") or [] if "extra ==" not in r]


def download_requirements(deepspeed_wheel: Path) -> list[str]:
    """What to download for the image: our requirements with DeepSpeed replaced by its own dependencies
    (its wheel is built locally; asking pip for it would pull torch and the CUDA libraries)."""
    ours = [r for r in project_requirements() if requirement_name(r) != "deepspeed"]
    theirs = [r for r in wheel_requirements(deepspeed_wheel) if requirement_name(r) != IMAGE_TORCH]
    return ours + theirs


def prune(wheelhouse: Path, names: list[str]) -> list[str]:
    """Delete the wheels of the given projects; returns the file names removed."""
    drop = {normalize(n) for n in names}
    removed = []
    for whl in sorted(wheelhouse.glob("*.whl")):
        if normalize(whl.name.split("-")[0]) in drop:
            whl.unlink()
            removed.append(whl.name)
    return removed


# ------------------------------------------------------------------------------------------- summary


def read_parts(run_dir: Path) -> list[dict]:
    """parts.tsv: one line per part gpu_check.sh ran: name, exit status, seconds, a note."""
    parts = []
    path = run_dir / "parts.tsv"
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        name, rc, seconds, note = (line.split("\t") + ["", "", ""])[:4]
        parts.append({"name": name, "rc": int(rc), "seconds": float(seconds), "note": note})
    return parts


VERBOSE_RESULT = re.compile(r"^\S+::(\S+) (PASSED|FAILED|ERROR|SKIPPED)\b")


def read_test_results(run_dir: Path) -> dict:
    """Counts and the names of failed tests: from pytest's --junitxml file, or, when pytest was stopped
    before writing it (the part timed out), from the result lines of its -v log so far."""
    out = {"passed": 0, "failed": 0, "skipped": 0, "failed_names": []}

    def add(name: str, kind: str) -> None:
        key = {"PASSED": "passed", "SKIPPED": "skipped"}.get(kind, "failed")
        out[key] += 1
        if key == "failed" and name not in out["failed_names"]:
            out["failed_names"].append(name)

    xml, log = run_dir / "tests.xml", run_dir / "tests.log"
    if xml.is_file():
        for case in ET.parse(xml).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            kind = "FAILED" if kinds & {"failure", "error"} else "SKIPPED" if "skipped" in kinds else "PASSED"
            add(case.get("name", "?"), kind)
    elif log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            m = VERBOSE_RESULT.match(line)
            if m:
                add(m.group(1), m.group(2))
    return out


def status(rc: int) -> str:
    return {0: "ok", 124: "TIMED OUT", 137: "TIMED OUT (killed)"}.get(rc, f"FAILED (exit {rc})")


def format_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *[line(r) for r in rows]]


def bench_rows(shape: str, path: Path, note: str) -> list[list[str]]:
    if not path.is_file():
        return [[shape, "-", "no result" + (f" ({note})" if note else ""), "", "", "", "", ""]]
    report = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for which in ("mluke", "hf"):
        r = report["models"].get(which)
        if r is None:
            rows.append([shape, which, "not run" + (f" ({note})" if note else ""), "", "", "", "", ""])
        elif "error" in r:
            rows.append([shape, r["label"], f"error: {r['error']}", "", "", "", "", ""])
        else:
            syncs = "n/a" if r["host_syncs_per_step"] is None else str(r["host_syncs_per_step"])
            kernels = f" ({r['attention_kernels'][0]})" if r["attention_kernels"] else ""
            rows.append([shape, r["label"], f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}", f"{r['peak_mem_gib']:.1f}",
                         syncs, r["attention"] + kernels, f"{r['eval_loss']:.4f}"])
    return rows


def summary(run_dir: Path) -> list[str]:
    parts = read_parts(run_dir)
    lines = []
    info = run_dir / "environment.txt"
    if info.is_file():
        lines += [info.read_text(encoding="utf-8").strip(), ""]
    part_rows = []
    for p in parts:
        result = status(p["rc"])
        if p["name"] == "tests":
            j = read_test_results(run_dir)
            result += f": {j['passed']} passed, {j['failed']} failed, {j['skipped']} skipped"
            if j["failed_names"]:
                result += " (" + ", ".join(j["failed_names"]) + ")"
        if p["note"]:
            result += f"; {p['note']}"
        part_rows.append([p["name"], f"{p['seconds']:.0f}", result])
    lines += format_table(["part", "s", "result"], part_rows)
    bench = [p for p in parts if p["name"].startswith("mluke-")]  # bench_model.py runs, one per shape
    if bench:
        rows = []
        for p in bench:
            rows += bench_rows(p["name"], run_dir / f"bench_{p['name']}.json", "" if p["rc"] == 0 else status(p["rc"]))
        lines += ["", *format_table(["shape", "model", "tokens/s", "MFU", "peak GiB", "host syncs/step",
                                     "attention", "eval loss"], rows)]
        large = run_dir / "bench_mluke-large.json"
        if large.is_file():
            ours = json.loads(large.read_text(encoding="utf-8"))["models"].get("mluke", {})
            if "mfu" in ours:
                met = "met" if ours["mfu"] >= MLUKE_LARGE_MFU_GOAL else "NOT met"
                lines.append(f"mluke-large stage 2, ours: {ours['mfu']:.1%} MFU (goal >= {MLUKE_LARGE_MFU_GOAL:.0%}: {met})")
    total = sum(p["seconds"] for p in parts)
    failed = [p["name"] for p in parts if p["rc"] != 0]
    lines += ["", f"total {total:.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all parts ok")]
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("requirements", help="requirement lines to install on the GPU image")
    d = sub.add_parser("download-requirements", help="requirement lines to download for the image")
    d.add_argument("deepspeed_wheel", type=Path)
    pr = sub.add_parser("prune", help="delete the wheels of projects the image has")
    pr.add_argument("wheelhouse", type=Path)
    pr.add_argument("names", nargs="*")
    s = sub.add_parser("summary", help="the closing table of gpu_check.sh")
    s.add_argument("run_dir", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "requirements":
        print("\n".join(project_requirements()))
    elif a.cmd == "download-requirements":
        print("\n".join(download_requirements(a.deepspeed_wheel)))
    elif a.cmd == "prune":
        for name in prune(a.wheelhouse, a.names):
            print(f"dropped {name} (the image has it)")
    else:
        print("\n".join(summary(a.run_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
