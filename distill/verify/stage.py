"""The verify & filter stage: every trace through decontamination, dedup, trace filters and the verifier,
streamed in two passes so memory is bounded by the batch size and a few bytes per row, not the trace count.

Pass 1 reads the traces a batch at a time and, in `workers` processes, judges each row (extraction and the
exact fast path), applies the trace filters, and signs problems and candidate traces (exact digests, MinHash).
What the fast path cannot settle goes to math-verify in killable checker processes, code answers to the
sandbox; then decontamination, problem and trace dedup and the per-problem cap are decided over the whole run
from the small per-row results. Pass 2 reads the traces again and writes them with their verdicts.

The funnel, in the order steps are applied (a trace's reason is the first step that drops it):

  decontaminate    contaminated                                   (benchmarks the spec evaluates on)
  dedup_problems   duplicate_problem, near_duplicate_problem      (same reference answer required)
  trace_filters    generation_error, truncated, missing_think, unclosed_think, too_short, too_long,
                   repetition, language_mixing, empty_answer
  verify           no_answer, incorrect, unverifiable: <why>, unreferenced (when not kept)
  dedup_traces     duplicate_trace, near_duplicate_trace          (among traces that passed verification)
  per_problem_cap  over_per_problem_cap
  domain_targets   over_domain_target                             (filter.domain_targets: targets.py)
  kept             correct, unreferenced (when keep_unreferenced)

Two columns keep the answer apart from the filters: `correct` is whether the final answer is right, judged for
every trace that has one (a right answer in a looping, language-mixing or duplicate trace is still correct);
`kept` is whether the trace goes to SFT, and `reason` says why not (the first step that drops it), or why it is
kept (`correct`, `unreferenced`).
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distill import progress, schemas
from distill.streaming import iter_batches
from distill.verify import dedup
from distill.verify import files as file_io
from distill.verify.decontam import Decontaminator
from distill.verify.extract import reference_answer
from distill.verify.judge import Verdict, precheck, verdict_from_result
from distill.verify.targets import DomainTargets

STEPS: list[tuple[str, tuple[str, ...]]] = [
    ("decontaminate", ("contaminated",)),
    ("dedup_problems", ("duplicate_problem", "near_duplicate_problem")),
    ("trace_filters", ("generation_error", "truncated", "missing_think", "unclosed_think", "too_short", "too_long",
                       "repetition", "language_mixing", "empty_answer")),
    ("verify", ("no_answer", "incorrect", "unverifiable", "unreferenced")),
    ("dedup_traces", ("duplicate_trace", "near_duplicate_trace")),
    ("per_problem_cap", ("over_per_problem_cap",)),
    ("domain_targets", ("over_domain_target",)),
]
STEP_OF = {r: step for step, reasons in STEPS for r in reasons}
JUDGE_FILTER_REASONS = {"generation_error", "truncated", "unclosed_think", "empty_answer"}
OUT_COLUMNS = tuple(f.name for f in schemas.VERDICT_FIELDS)
BATCH_ROWS = 1024
TRACE_K = 32  # characters per trace shingle
PROBLEM_K = 16  # characters per problem shingle (problems are short)
CHECK_CHUNK = 64  # comparisons per checker worker between two progress updates
PARALLEL_MIN_ROWS = 4096  # fewer rows are judged in-process: starting workers would cost more


def step_of(reason: str) -> str:
    return STEP_OF.get(reason.split(":")[0], "verify" if reason.startswith("unverifiable") else "other")


# ---------------------------------------------------------------- settings

@dataclass
class Settings:
    """What pass 1 needs from the spec's Filter, as plain values (sent to worker processes)."""

    drop_truncated: bool = True
    keep_unreferenced: bool = True
    max_per_problem: int | None = None
    require_think: bool = False
    min_chars: int = 0
    max_chars: int | None = None
    max_repetition: float = 0.5
    language_mixing: bool = True
    max_foreign_chars: int = 5
    dedup_problems: bool = True
    dedup_traces: bool = True
    dedup_traces_scope: str = "problem"
    near_duplicate_threshold: float = 0.8
    decontaminate: bool = True
    decontam_ngram: int = 8
    verify_timeout_s: float = 5.0
    verify_memory_mb: int = 1024
    code_timeout_s: float = 10.0
    code_memory_mb: int = 512
    domain_targets: dict | None = None

    @classmethod
    def from_filter(cls, f) -> Settings:
        if f is None:
            return cls()
        data = f.model_dump() if hasattr(f, "model_dump") else dict(f)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


# ---------------------------------------------------------------- pass 1 (runs in workers)

_CTX: dict = {}


def _init_worker(settings: Settings, grams: dict | None, n: int) -> None:
    _CTX.clear()
    _CTX["settings"] = settings
    dc = Decontaminator(n=n)
    dc.grams = grams or {}
    _CTX["decontam"] = dc
    _CTX["problems"] = set()


def _init_pool_worker(*init) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: no traceback per worker
    _init_worker(*init)


def _sig32(hashes: np.ndarray) -> np.ndarray:
    sig = dedup.signature(hashes)
    out = (sig & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    out[sig == dedup.EMPTY] = np.uint32(0xFFFFFFFF)
    return out


def _problem_info(problem: str, answer: str, s: Settings, dc: Decontaminator) -> tuple:
    from distill.verify.filters import dominant_script
    from distill.verify.mathcmp import normalise

    canon = dedup.canonical_words(problem)
    return (dc.match(problem) if s.decontaminate else None, dedup.digest(canon),
            _sig32(dedup.shingles(canon, PROBLEM_K)), dedup.digest(normalise(answer or "")),
            dominant_script(problem))


@dataclass
class BatchResult:
    """Pass 1's per-row results for one batch (small: no response text)."""

    n: int
    problem_ids: list
    reason: list  # str for decided rows, None while the comparison is pending
    extracted: list
    correct: list
    detail: list
    pending: list  # (row, kind, payload): kind "math" (pred, ref) or "code" (code, tests)
    digests: np.ndarray  # trace digests (0: not a dedup candidate)
    sig_rows: np.ndarray  # rows (within the batch) that have a trace signature
    sigs: np.ndarray  # (len(sig_rows), K) uint32
    problems: dict = field(default_factory=dict)  # problem_id -> problem info, first seen in this worker
    fast: int = 0
    outcome: list = field(default_factory=list)  # the answer's check: correct | incorrect | unverifiable | None
    node: str | None = None  # the Ray node that judged the batch (spread over a cluster), else None
    checked: dict | None = None  # the counts of `check_pending` when the batch was settled where it was judged


def _pass1(cols: dict) -> BatchResult:
    from distill.verify.filters import trace_problem
    from distill.verify.mathcmp import angle_problem, fast_compare

    s: Settings = _CTX["settings"]
    dc: Decontaminator = _CTX["decontam"]
    seen: set = _CTX["problems"]
    n = len(cols["response"])
    responses = cols["response"]
    answers = cols["answer"]
    finish = cols.get("finish_reason") or [None] * n
    formats = cols.get("answer_format") or [None] * n
    problems = cols.get("problem") or [""] * n
    pids = cols.get("problem_id") or [dedup.digest(p or "") for p in problems]
    res = BatchResult(n, list(pids), [None] * n, [None] * n, [False] * n, [None] * n, [],
                      np.zeros(n, dtype=np.uint64), np.empty(0, dtype=np.int64),
                      np.empty((0, dedup.K), dtype=np.uint32))
    res.outcome = [None] * n
    sig_rows, sigs = [], []
    for i in range(n):
        pid = pids[i]
        answer = answers[i] or ""
        if pid not in seen:
            seen.add(pid)
            res.problems[pid] = _problem_info(problems[i] or "", answer, s, dc)
        response = responses[i] or ""
        fmt = formats[i]
        pre = precheck(response, answer, finish[i], s.drop_truncated, fmt)
        if isinstance(pre, Verdict) and pre.reason in ("truncated", "generation_error", "unclosed_think"):
            res.reason[i] = pre.reason
            continue
        hashes = dedup.shingles(response, TRACE_K)  # raw text: canonicalising 10k characters costs more than it finds
        script = (res.problems.get(pid) or (None,) * 5)[4] or "latin"
        # A trace filter decides `reason` (and that the row is not kept); the answer is judged all the same, so
        # `correct` says whether it is right whatever the text around it.
        filt = trace_problem(response, script, s, hashes)
        res.reason[i] = filt
        candidate = False
        if isinstance(pre, Verdict):
            res.reason[i], res.extracted[i], res.detail[i] = filt or pre.reason, pre.extracted, pre.detail
            res.outcome[i] = pre.outcome if pre.outcome in ("incorrect", "unverifiable") else None
            candidate = filt is None and pre.reason == "unreferenced" and s.keep_unreferenced
        elif fmt == "code":
            res.extracted[i] = pre
            res.pending.append((i, "code", (pre, answer)))
            candidate = filt is None
        else:
            res.extracted[i] = pre
            try:
                fast = fast_compare(pre, answer)
            except Exception:  # noqa: BLE001 - the checker (with its limits) decides instead
                fast = None
            if fast is None:
                res.pending.append((i, "math", (pre, answer, angle_problem(problems[i]))))
                candidate = filt is None
            else:
                res.fast += 1
                res.correct[i] = fast[0]
                res.outcome[i] = "correct" if fast[0] else "incorrect"
                res.reason[i] = filt or res.outcome[i]
                res.detail[i] = fast[1]
                candidate = filt is None and fast[0]
        if candidate and (s.dedup_traces):
            res.digests[i] = np.uint64(dedup.digest(response) or 1)
            sig_rows.append(i)
            sigs.append(_sig32(hashes))
    if sig_rows:
        res.sig_rows = np.asarray(sig_rows, dtype=np.int64)
        res.sigs = np.stack(sigs)
    return res


def judge_batch(init: tuple, cols: dict) -> BatchResult:
    """One batch judged completely where it runs (a Ray task on any node, `distributed.py`): pass 1, then what
    the fast path left to math-verify and the sandbox, one checker process at a time, with the same limits."""
    _init_worker(*init)
    res = _pass1(cols)
    res.checked = check_pending([res], init[0], workers=1)
    return res


def _whole(items: list, size: int, phase: str, fn: Callable[[list], list]) -> list:
    return fn(items)


def check_pending(results: list[BatchResult], s: Settings, workers: int, chunks: Callable = _whole) -> dict:
    """Settle the comparisons pass 1 left pending in `results` (math-verify in killable checker processes, code in
    the sandbox), `workers` at a time; returns the counts for `stats["checked"]`. `chunks`: how the work is cut
    (`_in_chunks` moves the progress bar)."""
    from distill.verify import checker
    from distill.verify.code import run_tests_many
    from distill.verify.judge import compare_many
    from distill.verify.sandbox import Limits

    math_items = [(r, i, p) for r in results for i, kind, p in r.pending if kind == "math"]
    code_items = [(r, i, p) for r in results for i, kind, p in r.pending if kind == "code"]
    checked = {"fast_path": sum(r.fast for r in results), "checker": len(math_items), "code": len(code_items)}
    if math_items:
        pool = checker.pool(workers, s.verify_timeout_s, s.verify_memory_mb)
        killed = pool.killed
        out = chunks([p for _, _, p in math_items], CHECK_CHUNK * workers, "symbolic checks",
                     lambda part: compare_many(part, workers, s.verify_timeout_s, s.verify_memory_mb))
        checked["checker_restarts"] = pool.killed - killed
        for (r, i, (pred, *_)), (outcome, detail) in zip(math_items, out):
            _settle(r, i, verdict_from_result(pred, outcome, detail))
    if code_items:
        limits = Limits(cpu_s=max(1, int(s.code_timeout_s)), wall_s=s.code_timeout_s + 2, memory_mb=s.code_memory_mb)
        out = chunks([p for _, _, p in code_items], 2 * workers, "code tests",
                     lambda part: run_tests_many(part, workers, limits))
        for (r, i, (code, _)), (outcome, detail) in zip(code_items, out):
            _settle(r, i, verdict_from_result(code, outcome, detail))
    for r in results:
        r.pending = []
    return checked


def _settle(r: BatchResult, i: int, v: Verdict) -> None:
    r.reason[i] = r.reason[i] or v.reason  # a trace filter's reason stands; `correct` is the answer's
    r.correct[i], r.detail[i], r.outcome[i] = v.correct, v.detail, v.outcome
    if not v.correct and r.digests[i]:
        r.digests[i] = 0  # no longer a dedup candidate


# ---------------------------------------------------------------- reading

def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no Parquet files in {path}")
    return files


def _schema(files: list[Path]) -> pa.Schema:
    return pa.unify_schemas([pq.read_schema(f) for f in files], promote_options="default")


def parquet_batches(files: list[Path], columns: list[str] | None = None, rows: int = BATCH_ROWS
                    ) -> Iterator[pa.RecordBatch]:
    for f in files:
        yield from iter_batches(f, columns, rows)  # without pre-buffering: one row group held at a time


NEEDED = ["response", "answer", "finish_reason", "answer_format", "problem", "problem_id", "domain"]


def _cols(batch: pa.RecordBatch) -> dict:
    return {c: batch.column(c).to_pylist() for c in NEEDED if c in batch.schema.names}


# ---------------------------------------------------------------- the run

class FilterRun:
    """Pass 1 over `batches()`, the global decisions, then `annotate` per batch for pass 2."""

    def __init__(self, settings: Settings, benchmarks=None, workers: int = 1,
                 decontaminator: Decontaminator | None = None, log: Callable[[str], None] | None = None,
                 spread: bool = False):
        self.s = settings
        self.workers = max(1, int(workers))
        self.spread = spread  # judge the batches as Ray tasks over the cluster (distributed.py)
        self.placement: dict = {}
        self.targets = DomainTargets(settings.domain_targets) if settings.domain_targets else None
        self.log = log or (lambda msg: None)
        self.decontam = decontaminator
        if self.decontam is None and settings.decontaminate and benchmarks:
            self.decontam = Decontaminator(benchmarks, n=settings.decontam_ngram)
        self.results: list[BatchResult] = []
        self.seconds: dict[str, float] = {}

    # pass 1 -------------------------------------------------------------------------------------------------
    def pass1(self, batches: Iterator[dict], total_rows: int | None = None) -> None:
        t0 = time.monotonic()
        grams = self.decontam.grams if self.decontam else {}
        init = (self.s, grams, self.s.decontam_ngram)
        bar = progress.Bar(None, total_rows, "trace", default="verify", phase="fast checks")

        def add(res: BatchResult) -> None:
            self.results.append(res)
            bar.update(len(res.reason), pending=sum(len(r.pending) for r in self.results))

        if self.targets is not None:
            batches = self.targets.note(batches)
        try:
            self._pass1(batches, total_rows, init, add)
        finally:
            bar.close()
        self.seconds["pass1"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        self._resolve_pending()
        self.seconds["check"] = round(time.monotonic() - t0, 2)
        t0 = time.monotonic()
        with progress.Bar(None, self.n_rows(), "trace", default="verify", phase="dedup") as bar:
            self._decide()
            bar.update(self.n_rows())
        self.seconds["dedup"] = round(time.monotonic() - t0, 2)

    def n_rows(self) -> int:
        return sum(r.n for r in self.results)

    def _pass1(self, batches: Iterator[dict], total_rows: int | None, init: tuple,
               add: Callable[[BatchResult], None]) -> None:
        if self.spread:
            from distill.verify.distributed import judge_on_cluster

            judge_on_cluster(batches, init, add, judge_batch)
            rows_by_node: Counter = Counter()
            for r in self.results:
                rows_by_node[r.node] += r.n
            self.placement = {"mode": "ray", "batch_nodes": [r.node for r in self.results],
                              "rows_by_node": dict(rows_by_node)}
        elif self.workers <= 1 or (total_rows is not None and total_rows < PARALLEL_MIN_ROWS):
            self.placement = {"mode": "in_process", "workers": 1}
            _init_worker(*init)
            for cols in batches:
                add(_pass1(cols))
        else:
            self.placement = {"mode": "processes", "workers": self.workers}
            ctx = mp.get_context("spawn")  # the caller may hold Ray's threads: never fork it
            with cf.ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_pool_worker,
                                        initargs=init) as ex:
                window: deque = deque()
                for cols in batches:
                    window.append(ex.submit(_pass1, cols))
                    if len(window) >= 2 * self.workers:
                        add(window.popleft().result())
                while window:
                    add(window.popleft().result())

    def _resolve_pending(self) -> None:
        settled = [r.checked for r in self.results if r.checked]  # batches settled where they were judged
        checked = Counter(check_pending(self.results, self.s, self.workers, _in_chunks))
        for c in settled:
            checked.update(c)
        self.checked = dict(checked)

    # global decisions ---------------------------------------------------------------------------------------
    def _decide(self) -> None:
        s = self.s
        # problems, in order of first appearance
        pindex: dict = {}
        info: list = []
        for r in self.results:
            for pid in r.problem_ids:
                if pid not in pindex:
                    pindex[pid] = len(info)
                    info.append(None)
            for pid, inf in r.problems.items():
                if info[pindex[pid]] is None:
                    info[pindex[pid]] = inf
        self.n_problems = len(info)
        pdrop: list = [None] * len(info)
        self.contaminated_by: Counter = Counter()
        for k, inf in enumerate(info):
            if inf is not None and inf[0]:
                pdrop[k] = "contaminated"
                self.contaminated_by[inf[0]] += 1
        live = [k for k in range(len(info)) if pdrop[k] is None and info[k] is not None]
        if s.dedup_problems and live:
            digests = np.array([info[k][1] for k in live], dtype=np.uint64)
            for k, dup in zip(live, dedup.exact_duplicates(digests)):
                if dup:
                    pdrop[k] = "duplicate_problem"
            live = [k for k in live if pdrop[k] is None]
            if s.near_duplicate_threshold < 1 and len(live) > 1:
                sigs = np.stack([info[k][2] for k in live])
                salt = np.array([info[k][3] for k in live], dtype=np.uint64)
                for k, dup in zip(live, _near(sigs, s.near_duplicate_threshold, salt)):
                    if dup:
                        pdrop[k] = "near_duplicate_problem"
        # rows: problem-level drops first, then what pass 1 and the checkers decided
        self.row_pidx = []
        for r in self.results:
            idx = np.fromiter((pindex[p] for p in r.problem_ids), dtype=np.int64, count=r.n)
            self.row_pidx.append(idx)
            for i in range(r.n):
                drop = pdrop[idx[i]]
                if drop is not None:
                    r.reason[i] = drop
                    r.digests[i] = 0
        # trace dedup among the rows still in the running
        if s.dedup_traces:
            cand_b, cand_i, digs, sigs, groups = [], [], [], [], []
            for b, r in enumerate(self.results):
                if not len(r.sig_rows):
                    continue
                keep = r.digests[r.sig_rows] != 0
                rows = r.sig_rows[keep]
                cand_b.append(np.full(len(rows), b, dtype=np.int64))
                cand_i.append(rows)
                digs.append(r.digests[rows])
                sigs.append(r.sigs[keep])
                groups.append(self.row_pidx[b][rows])
            if cand_b:
                cb, ci = np.concatenate(cand_b), np.concatenate(cand_i)
                # Same trace for two different problems is no duplicate (e.g. a short answer): compared within a
                # problem unless the spec asks for global dedup.
                group = None if s.dedup_traces_scope == "global" else np.concatenate(groups).astype(np.uint64)
                exact = dedup.exact_duplicates(np.concatenate(digs), group)
                for b, i in zip(cb[exact].tolist(), ci[exact].tolist()):
                    self.results[b].reason[i] = "duplicate_trace"
                rest = ~exact
                if s.near_duplicate_threshold < 1 and rest.sum() > 1:
                    near = _near(np.concatenate(sigs)[rest], s.near_duplicate_threshold,
                                 None if group is None else group[rest])
                    for b, i in zip(cb[rest][near].tolist(), ci[rest][near].tolist()):
                        self.results[b].reason[i] = "near_duplicate_trace"
        # keep, and the per-problem cap
        per_problem = np.zeros(len(info), dtype=np.int64)
        self.kept = []
        for r, idx in zip(self.results, self.row_pidx):
            kept = np.zeros(r.n, dtype=bool)
            for i in range(r.n):
                reason = r.reason[i]
                keep = reason == "correct" or (reason == "unreferenced" and s.keep_unreferenced)
                if keep and s.max_per_problem and per_problem[idx[i]] >= s.max_per_problem:
                    keep = False
                    r.reason[i] = "over_per_problem_cap"
                if keep:
                    per_problem[idx[i]] += 1
                kept[i] = keep
            self.kept.append(kept)
        self.target_report = None
        if self.targets is not None:
            self.target_report, dropped = self.targets.hold(self.kept, self.row_pidx, [r.reason for r in self.results])
            np.subtract.at(per_problem, dropped, 1)
        self.per_problem = per_problem

    # pass 2 -------------------------------------------------------------------------------------------------
    def columns(self, b: int) -> dict:
        r = self.results[b]
        return {"extracted": r.extracted, "correct": r.correct, "reason": r.reason, "kept": self.kept[b],
                "detail": r.detail}

    def stats(self) -> dict:
        """The funnel from the `reason` column, `kept` from the kept column, and the answers' own verdicts
        (`correct`, `outcomes`, `unverifiable`) over every trace whose answer was checked, kept or not;
        `correct_not_kept` counts right answers dropped, by the reason that dropped them."""
        reasons: Counter = Counter()
        outcomes: Counter = Counter()
        unverifiable: Counter = Counter()
        correct_not_kept: Counter = Counter()
        for r, kept_rows in zip(self.results, self.kept):
            reasons.update(r.reason)
            outcomes.update(o for o in r.outcome if o)
            unverifiable.update(d for o, d in zip(r.outcome, r.detail) if o == "unverifiable")
            correct_not_kept.update(why for ok, k, why in zip(r.correct, kept_rows, r.reason) if ok and not k)
        correct = outcomes["correct"]
        generated = sum(r.n for r in self.results)
        kept = int(sum(k.sum() for k in self.kept))
        funnel = [{"step": "generated", "remaining": generated}]
        remaining = generated
        kept_reasons = {"correct"} | ({"unreferenced"} if self.s.keep_unreferenced else set())
        for step, names in STEPS:
            dropped = {}
            for reason, c in sorted(reasons.items()):
                if reason in kept_reasons or step_of(reason) != step:
                    continue
                dropped[reason] = c
            remaining -= sum(dropped.values())
            funnel.append({"step": step, "dropped": dropped, "remaining": remaining})
        funnel.append({"step": "kept", "remaining": kept,
                       "by_reason": {r: reasons[r] for r in sorted(kept_reasons) if reasons.get(r)},
                       **({"targets": self.target_report} if self.target_report is not None else {})})
        return {
            "generated": generated,
            "correct": int(correct),
            "kept": kept,
            "problems": self.n_problems,
            "problems_with_kept_trace": int((self.per_problem > 0).sum()),
            "reasons": dict(reasons.most_common()),
            "funnel": funnel,
            "correct_not_kept": dict(correct_not_kept.most_common()),
            "outcomes": dict(outcomes),
            "unverifiable": dict(unverifiable),
            "contaminated_by": dict(self.contaminated_by),
            "checked": self.checked,
            "seconds": self.seconds,
            "placement": self.placement,
            **({"domain_targets": self.target_report} if self.target_report is not None else {}),
        }


def _in_chunks(items: list, size: int, phase: str, fn: Callable[[list], list]) -> list:
    """`fn(items)` a chunk at a time, so the progress bar (and status.json) moves through a slow phase."""
    out: list = []
    with progress.Bar(None, len(items), "check", default="verify", phase=phase) as bar:
        for a in range(0, len(items), size):
            part = fn(items[a : a + size])
            out.extend(part)
            bar.update(len(part))
    return out


def _near(sigs32: np.ndarray, threshold: float, salt: np.ndarray | None) -> np.ndarray:
    sigs = sigs32.astype(np.uint64)
    sigs[sigs32 == np.uint32(0xFFFFFFFF)] = dedup.EMPTY
    return dedup.near_duplicates(sigs, threshold, row_salt=salt)


# ---------------------------------------------------------------- writing

def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    t = pa.Table.from_batches([batch])
    cols = []
    for f in schema:
        if f.name in t.column_names:
            col = t.column(f.name)
            cols.append(col if col.type == f.type else col.cast(f.type))
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _annotated(table: pa.Table, cols: dict) -> pa.Table:
    table = table.drop_columns([name for name in OUT_COLUMNS if name in table.column_names])
    for f in schemas.VERDICT_FIELDS:
        table = table.append_column(f, pa.array(cols[f.name], f.type))
    return table


class _Writer:
    """Parquet or JSONL (by suffix), written to a temporary file and renamed into place on close."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.parent / f".{self.path.name}.tmp-{uuid.uuid4().hex[:8]}"
        self.pq: pq.ParquetWriter | None = None
        self.fh = None if self.path.suffix == ".parquet" else open(self.tmp, "w")
        self.schema = None

    def write(self, table: pa.Table) -> None:
        if self.fh is not None:
            for row in table.to_pylist():
                self.fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
            return
        if self.pq is None:
            self.schema = table.schema
            self.pq = pq.ParquetWriter(self.tmp, self.schema)
        self.pq.write_table(table)

    def close(self, schema: pa.Schema | None = None) -> None:
        if self.fh is not None:
            self.fh.close()
        else:
            if self.pq is None:  # no rows: still a valid, empty file with the columns
                pq.write_table((schema or pa.schema([])).empty_table(), self.tmp)
            else:
                self.pq.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        for h in (self.fh, self.pq):
            try:
                if h is not None:
                    h.close()
            except Exception:  # noqa: BLE001
                pass
        self.tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------- entry points

def verify_stage(generated_dir: Path, out_dir: Path, spec_filter, workers: int = 1, benchmarks=None,
                 spread: bool = False) -> dict:
    """Read generated traces, filter and judge them, write every trace with its verdict (`traces.parquet`: the
    input columns plus extracted, correct, reason, kept, detail) and the kept ones (`kept.parquet`), and return
    the stats (also written as `stats.json`): generated, correct, kept, reasons (counts per final reason) and
    funnel (ordered steps with what each dropped). `benchmarks`: the spec's `eval.benchmarks` (decontamination
    against exactly the problems evaluated). `spread`: judge the batches as Ray tasks over the cluster
    (`distributed.py`); the output is the same row for row."""
    s = Settings.from_filter(spec_filter)
    files = _files(Path(generated_dir))
    schema = _schema(files)
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    run = FilterRun(s, benchmarks, workers, spread=spread)
    run.pass1((_cols(b) for b in parquet_batches(files, NEEDED)), total)
    out_schema = schemas.verified_schema(schema)
    traces, kept = _Writer(Path(out_dir) / "traces.parquet"), _Writer(Path(out_dir) / "kept.parquet")
    bar = progress.Bar(None, total, "trace", default="verify", phase="writing")
    try:
        for b, batch in enumerate(parquet_batches(files)):
            table = _annotated(_conform(batch, schema), run.columns(b))
            traces.write(table)
            bar.update(table.num_rows)
            mask = pa.array(run.kept[b], pa.bool_())
            if run.kept[b].any():
                kept.write(table.filter(mask))
        traces.close(out_schema)
        kept.close(out_schema)
    except BaseException:
        traces.abort()
        kept.abort()
        raise
    finally:
        bar.close()
    stats = run.stats()
    (Path(out_dir) / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


REQUIRED = ("problem", "answer", "response")


def verify_file(in_path: str | Path, out_path: str | Path, workers: int = 1, answer_format: str = "plain",
                spec_filter=None, benchmarks=None, stats_path: str | Path | None = None) -> Counter:
    """`distill verify`: rows with problem, answer (reference) and response in; the same rows plus extracted,
    correct, reason, kept and detail out (JSONL, Parquet or CSV by the output's suffix), through the same filters,
    dedup and verifier as the pipeline (`spec_filter`: a spec Filter, default settings when None). The paths and
    every row are checked before any row is judged (`distill.verify.files`); values keep their input types.
    The file is read three times a chunk at a time (check, judge, write), so memory holds one chunk of rows
    and the small per-row verdicts, whatever the file's size. Returns counts per reason."""
    in_path, out_path = Path(in_path), Path(out_path)
    file_io.check_paths(in_path, out_path)
    n, columns, types = _check_file(in_path, out_path)

    def chunks(judged: tuple[str, ...] | None = None) -> Iterator[file_io.Input]:
        return file_io.read_chunks(in_path, judged, rows=BATCH_ROWS)

    run = FilterRun(Settings.from_filter(spec_filter), benchmarks, workers)
    run.pass1((_judged_columns(chunk.rows, answer_format) for chunk in chunks(tuple(NEEDED))), n)
    verdicts = list(run.columns(0))
    writer = file_io.Writer(out_path, [c for c in columns if c not in verdicts] + verdicts)
    bar = progress.Bar(None, n, "row", default="verify", phase="writing")
    try:
        for b, chunk in enumerate(chunks()):
            if out_path.suffix != ".parquet":
                writer.write_rows(file_io.with_verdicts(chunk.rows, run.columns(b)))
            else:
                table = chunk.table if chunk.table is not None else types.table(chunk)
                writer.write_table(_annotated(table, run.columns(b)))
            bar.update(len(chunk.rows))
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    if stats_path:
        Path(stats_path).write_text(json.dumps(run.stats(), indent=2))
    return Counter(r for res in run.results for r in res.reason)


def _check_file(in_path: Path, out_path: Path) -> tuple[int, list[str], file_io.ColumnTypes | None]:
    """Every row read once before any is judged: (rows, columns in order of appearance, the column types of a
    Parquet output written from JSONL or CSV); ValueError (one line per bad row, at most MAX_BAD_LINES) for an
    empty file, missing columns, rows the verifier cannot take, or columns Parquet cannot hold."""
    n, columns, bad, n_bad, unreadable = 0, [], [], 0, 0
    types = file_io.ColumnTypes(OUT_COLUMNS) if out_path.suffix == ".parquet" and \
        in_path.suffix != ".parquet" else None
    for chunk in file_io.read_chunks(in_path, tuple(NEEDED), rows=BATCH_ROWS):
        n += len(chunk.rows)
        unreadable += len(chunk.bad)
        columns = chunk.columns
        lines = file_io.bad_rows(chunk)
        n_bad += len(lines)
        bad.extend(lines[: file_io.MAX_BAD_LINES + 1 - len(bad)])
        if types is not None and not n_bad:
            types.observe(chunk)
    if not n and not unreadable:
        raise ValueError(f"{in_path}: no rows")
    missing = [c for c in REQUIRED if c not in columns]
    if missing and not unreadable:
        raise ValueError(f"{in_path}: missing column(s) {', '.join(missing)} (need problem, answer, response)")
    if n_bad:
        raise ValueError(file_io.summarise(bad, n_bad))
    if types is not None:
        types.check(in_path)
    return n, columns, types


def _judged_columns(rows: list[dict], answer_format: str) -> dict:
    """What pass 1 reads of a chunk of input rows."""
    problems = [str(r["problem"]) if r.get("problem") is not None else "" for r in rows]
    return {
        "response": [r.get("response") or "" for r in rows],
        "answer": [reference_answer(r.get("answer"), answer_format) for r in rows],
        "finish_reason": [r.get("finish_reason") for r in rows],
        "answer_format": [answer_format if answer_format == "code" else None] * len(rows),
        "problem": problems,
        "problem_id": [r.get("problem_id") or f"p{dedup.digest(p):x}" for r, p in zip(rows, problems)],
    }
