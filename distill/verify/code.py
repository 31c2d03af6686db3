"""Code answers: the final fenced code block, run against the problem's tests in the sandbox.

A code problem's reference (answer_format "code") is a JSON object of tests, in one of two shapes:

  stdin/stdout   {"inputs": ["1 2\\n", ...], "outputs": ["3\\n", ...]}            (APPS / TACO / Codeforces style)
  function call  {"fn_name": "add", "inputs": [[1, 2], ...], "outputs": [3, ...]}  (LeetCode style; a
                 `class Solution` method of that name works too)

A list of {"input": ..., "output": ...} objects, and open-r1's {"test_cases": [...]} wrapper, are accepted and
normalised to the first shape. Outputs are compared line by line with trailing whitespace ignored, numbers
within 1e-6; function results as JSON values (tuples as lists), floats within 1e-6. The program never sees the
expected outputs: only the inputs are written into its sandbox.

Verdict details: `tests 5/5`; `wrong_answer 3/5`, `runtime_error`, `timeout`, `cpu_limit`, `memory_limit`,
`file_limit` (all incorrect: the program failed its tests); `bad_tests`, `sandbox_error` (unverifiable).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from concurrent.futures import ThreadPoolExecutor

from distill.verify.sandbox import Limits, run_python

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_CODE_LANGS = {"", "python", "py", "python3", "py3"}


def extract_code(region: str) -> str | None:
    """The last fenced code block (```python ... ``` or a bare ``` block) of the final-answer region; None when
    there is none or the last fence never closes (a cut-off answer)."""
    if region.count("```") % 2 == 1:
        return None
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(region)]
    for lang, body in reversed(blocks):
        if lang in _CODE_LANGS and body.strip():
            return body
    return None


def normalise_tests(raw: object) -> str:
    """A reference answer of test cases as canonical JSON (see the module docstring); "" when there are none."""
    if raw is None or raw == "":
        return ""
    data = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
    if isinstance(data, dict) and "test_cases" in data:
        data = data["test_cases"]
    if isinstance(data, dict) and "input_output" in data:
        io = data["input_output"]
        data = json.loads(io) if isinstance(io, str) else io
    if isinstance(data, list):
        data = {"inputs": [t["input"] for t in data], "outputs": [t["output"] for t in data]}
    if not isinstance(data, dict) or "inputs" not in data or "outputs" not in data:
        raise ValueError("code tests need 'inputs' and 'outputs' (or a list of {input, output})")
    if len(data["inputs"]) != len(data["outputs"]):
        raise ValueError("code tests: as many outputs as inputs are needed")
    out = {"inputs": data["inputs"], "outputs": data["outputs"]}
    if data.get("fn_name"):
        out["fn_name"] = str(data["fn_name"])
    return json.dumps(out, sort_keys=True)


def _num(tok: str) -> float | None:
    try:
        return float(tok)
    except ValueError:
        return None


def same_stdout(got: str, want: str) -> bool:
    g = [ln.rstrip() for ln in got.strip().splitlines()]
    w = [ln.rstrip() for ln in str(want).strip().splitlines()]
    if g == w:
        return True
    gt, wt = " ".join(g).split(), " ".join(w).split()
    if len(gt) != len(wt):
        return False
    for a, b in zip(gt, wt):
        if a != b:
            x, y = _num(a), _num(b)
            if x is None or y is None or not math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-6):
                return False
    return True


def same_value(got, want) -> bool:
    if isinstance(want, float) or isinstance(got, float):
        try:
            return math.isclose(float(got), float(want), rel_tol=1e-6, abs_tol=1e-6)
        except (TypeError, ValueError):
            return False
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        return len(got) == len(want) and all(same_value(a, b) for a, b in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same_value(got[k], want[k]) for k in want)
    return got == want


_HARNESS = """
import json, sys
_nonce = {nonce!r}
_ns = {{"__name__": "__solution__"}}
exec(compile(open("solution.py").read(), "solution.py", "exec"), _ns)
_fn = _ns.get({fn!r})
if _fn is None and "Solution" in _ns:
    _fn = getattr(_ns["Solution"](), {fn!r})
for _args in json.load(open("inputs.json")):
    if not isinstance(_args, list):
        _args = [_args]
    try:
        _out = _fn(*_args)
        print(_nonce + json.dumps(_out, default=repr), flush=True)
    except Exception as _e:
        print(_nonce + "!" + type(_e).__name__, flush=True)
"""

_FAIL = {"timeout", "cpu_limit", "memory_limit", "file_limit", "runtime_error"}


def run_tests(code: str, tests_json: str, limits: Limits | None = None) -> tuple[str, str]:
    """(outcome, detail) for one program against its tests."""
    try:
        tests = json.loads(tests_json)
        inputs, outputs = tests["inputs"], tests["outputs"]
    except (ValueError, KeyError, TypeError):
        return "unverifiable", "bad_tests"
    if not inputs:
        return "unverifiable", "bad_tests"
    limits = limits or Limits()
    n = len(inputs)
    if tests.get("fn_name"):
        nonce = uuid.uuid4().hex
        res = run_python(_HARNESS.format(nonce=nonce, fn=tests["fn_name"]), limits=limits,
                         files={"solution.py": code, "inputs.json": json.dumps(inputs)})
        if res.status == "sandbox_error":
            return "unverifiable", "sandbox_error"
        results = [ln[len(nonce):] for ln in res.stdout.splitlines() if ln.startswith(nonce)]
        passed = 0
        for got, want in zip(results, outputs):
            if got.startswith("!"):
                continue
            try:
                passed += same_value(json.loads(got), want)
            except ValueError:
                pass
        if passed == n:
            return "correct", f"tests {n}/{n}"
        if res.status in _FAIL and res.status != "runtime_error" or (res.status != "ok" and len(results) < n):
            return "incorrect", res.status
        return "incorrect", f"wrong_answer {passed}/{n}"
    for i, (stdin, want) in enumerate(zip(inputs, outputs)):
        res = run_python(code, stdin=stdin if isinstance(stdin, str) else json.dumps(stdin), limits=limits)
        if res.status == "sandbox_error":
            return "unverifiable", "sandbox_error"
        if res.status != "ok":
            return "incorrect", res.status
        if not same_stdout(res.stdout, want):
            return "incorrect", f"wrong_answer {i}/{n}"
    return "correct", f"tests {n}/{n}"


def run_tests_many(items: list[tuple[str, str]], workers: int = 1, limits: Limits | None = None
                   ) -> list[tuple[str, str]]:
    """`run_tests` for each (code, tests) pair, `workers` sandboxes at a time."""
    if len(items) <= 1 or workers <= 1:
        return [run_tests(c, t, limits) for c, t in items]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(lambda it: run_tests(it[0], it[1], limits), items))
