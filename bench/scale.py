"""N synthetic R1-length traces through the real prompts, verify, sft and tokenisation code: wall time and the peak
resident memory of the whole process tree (this process, the verify workers and checker processes, the tokeniser
processes), which must stay bounded (goal: 3 GB) whatever N.

    .venv/bin/python bench/scale.py [--rows 800000] [--dir WORK] [--keep]

Built first (timed apart, as `build_s`): two prompt sources as Parquet files, 3/4 math problems with integer
answers and 1/4 chat requests with none (R1's 600k reasoning + 200k non-reasoning), and, after the prompts stage,
four traces per problem written as generate-stage shards. A trace's length is lognormal (median 5,000 characters,
sigma 0.95: p99 about 45,000, like R1's reasoning); its text is random paragraphs of a fixed pseudo-word
vocabulary; 10% of math traces give a wrong answer, 2% hit max_tokens. The measured median and p99 of the
responses are printed.

Then, timed (`wall_s`): `build_prompts`, `verify_stage` (all cores, decontaminating against MATH-500), then
`build_sft_dataset` and `tokenized_sft` (SmolLM2's tokenizer, max_length 16,384, all cores). The peak RSS is
sampled every 0.1 s over the process tree from the first byte written to the last token (`TreeMemory`; PSS,
sampled every 2 s, is printed beside it).
The last line reads `rows N wall_s W peak_rss_gb R`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from process_tree import tree  # bench/ is the script's own folder, first on sys.path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BENCHMARKS = Path(__file__).resolve().parent.parent / "datasets_spec" / "benchmarks"

SAMPLES = 4  # traces per problem
MEDIAN_CHARS, SIGMA = 5000, 0.95
PART_ROWS = 20_000  # problems per source row group
SHARD_ROWS = 4096  # traces per generate shard (as a teacher's shards: small, so building them stays small too)
MAX_LENGTH = 16_384


class TreeMemory:
    """Peak memory of this process plus all its descendants (verify workers, checker processes, tokeniser
    processes): the sum of RSS sampled every `every` seconds (what the goal is stated in; pages a forked child
    shares with its parent count in both, and so do the pages of memory-mapped Arrow files read), the sum of PSS
    (shared pages split between their sharers) and the sum of RSS less file-backed pages, every `full_every`th."""

    def __init__(self, every: float = 0.1, full_every: int = 20):
        import psutil

        self.proc = psutil.Process()
        self.peak_rss = self.peak_pss = self.peak_anon = 0
        self.stage_peak = 0  # RSS peak since the last `lap`
        self.own: list[float] = []  # this process's RSS (GB) at each lap
        self.per_process: dict[int, int] = {}
        # RSS (statm: cheap) every `every` s; PSS and file-backed pages (smaps: a walk of every mapping, half a
        # core at 0.1 s with four torch-sized processes, taken from the very stages measured) every `full_every`th.
        self.every, self.full_every = every, full_every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        n = 0
        while not self._stop.is_set():
            full = n % self.full_every == 0
            n += 1
            rss = pss = anon = 0
            for p in tree(self.proc):
                try:
                    mem = p.memory_full_info() if full else p.memory_info()
                except psutil.Error:
                    continue
                rss += mem.rss
                if full:
                    pss += getattr(mem, "pss", mem.rss)
                    anon += mem.rss - getattr(mem, "shared", 0)  # less file-backed pages (memory-mapped Arrow files)
                self.per_process[p.pid] = max(self.per_process.get(p.pid, 0), mem.rss)
            self.peak_rss = max(self.peak_rss, rss)
            if full:
                self.peak_pss, self.peak_anon = max(self.peak_pss, pss), max(self.peak_anon, anon)
            self.stage_peak = max(self.stage_peak, rss)
            self._stop.wait(self.every)

    def lap(self) -> float:
        """The tree's RSS peak (GB) since the previous lap; notes this process's own RSS now in `own`."""
        peak, self.stage_peak = self.stage_peak, 0
        self.own.append(self.proc.memory_info().rss / 1e9)
        return peak / 1e9

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _paragraphs(rng: np.random.Generator, n: int = 20_000) -> list[str]:
    """Random sentences of the English words of MATH-500's and GSM8K's solutions: text that tokenises like a
    trace (about 4 characters a token), with no two traces alike."""
    text = " ".join(json.loads(line).get("solution") or json.loads(line)["answer"]
                    for name in ("math500.jsonl", "gsm8k_test.jsonl") for line in (BENCHMARKS / name).open())
    vocab = sorted(set(re.findall(r"[A-Za-z]+|[0-9]+|[=+\-]", text)))
    out = []
    for _ in range(n):
        words = [vocab[i] for i in rng.integers(0, len(vocab), int(rng.integers(50, 90)))]
        out.append(" ".join(words).capitalize() + ".")
    return out


def write_sources(work: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Math problems (integer answers) and chat requests (no reference), 3:1, as two Parquet files."""
    rng = np.random.default_rng(seed)
    n_problems = max(4, rows // SAMPLES)
    n_chat = n_problems // 4
    math_path, chat_path = work / "math.parquet", work / "chat.parquet"
    for path, start, stop in ((math_path, 0, n_problems - n_chat), (chat_path, n_problems - n_chat, n_problems)):
        with pq.ParquetWriter(path, pa.schema([("problem", pa.string()), ("answer", pa.string())])) as w:
            for a in range(start, stop, PART_ROWS):
                ids = range(a, min(stop, a + PART_ROWS))
                w.write_table(pa.table({
                    "problem": [f"Problem {i}: what is {i} plus {int(rng.integers(1, 1000))} times the unknown?"
                                for i in ids],
                    "answer": [str(i * 7 + 3) for i in ids]}))
    return math_path, chat_path


def write_traces(prompts: Path, out: Path, rows: int, seed: int = 0) -> np.ndarray:
    """SAMPLES traces per prompt (the first `rows` in all) as generate-stage shards; returns their lengths."""
    from distill import schemas
    from distill.streaming import iter_batches

    rng = np.random.default_rng(seed + 1)
    paragraphs = _paragraphs(rng)
    mean_par = sum(len(p) for p in paragraphs) / len(paragraphs)
    schema = schemas.trace_schema(schemas.PROMPTS)
    lengths = np.empty(rows, dtype=np.int64)
    done = part = 0
    for batch in iter_batches(prompts, rows=SHARD_ROWS // SAMPLES):
        if done >= rows:
            break
        cols = batch.to_pydict()
        table: dict[str, list] = {f.name: [] for f in schema}
        for i in range(batch.num_rows):
            for s in range(SAMPLES):
                if done >= rows:
                    break
                target = int(np.clip(rng.lognormal(np.log(MEDIAN_CHARS), SIGMA), 200, 400_000))
                picks = rng.integers(0, len(paragraphs), max(1, round(target / mean_par)))
                body = " ".join(paragraphs[j] for j in picks)
                body = f"Attempt {s} at {cols['problem_id'][i]}. {body}"
                finish = "stop"
                if cols["answer_format"][i] == "none":
                    response = body
                else:
                    answer = cols["answer"][i]
                    if rng.random() < 0.1:
                        answer = str(int(answer) + 1)
                    response = f"<think>\n{body}\n</think>\n\nThe answer is $\\boxed{{{answer}}}$."
                    if rng.random() < 0.02:
                        finish, response = "length", response[: len(response) * 3 // 4]
                for name in schemas.PROMPTS.names:
                    table[name].append(cols[name][i])
                for name, value in (("sample_index", s), ("response", response), ("finish_reason", finish),
                                    ("completion_tokens", len(response) // 4), ("teacher", "synthetic"),
                                    ("backend", "bench")):
                    table[name].append(value)
                lengths[done] = len(response)
                done += 1
        n = len(table["response"])
        for name in table:
            if len(table[name]) < n:
                table[name] = [None] * n
        pq.write_table(pa.table(table, schema=schema), out / f"shard-{part:06d}.parquet", compression="zstd")
        part += 1
    return lengths[:done]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=800_000, help="traces (default 800,000)")
    ap.add_argument("--dir", help="work directory (default: a temporary one, removed after)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    from distill.pipeline.prompts import build_prompts
    from distill.pipeline.sft import build_sft_dataset
    from distill.spec import Benchmark, Filter, Prompts, Student
    from distill.training.sft import tokenizer_for
    from distill.training.tokenized import tokenized_sft
    from distill.verify import verify_stage

    work = Path(args.dir or tempfile.mkdtemp(prefix="distill-scale-"))
    dirs = {name: work / name for name in ("sources", "prompts", "generate", "verify", "sft")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    try:
        with TreeMemory() as mem:
            t = time.monotonic()
            math_src, chat_src = write_sources(dirs["sources"], args.rows)
            build = time.monotonic() - t
            peaks = {"build": mem.lap()}
            spec = Prompts(sources=[{"path": str(math_src)},
                                    {"path": str(chat_src), "answer_format": "none", "domain": "chat"}])
            t = time.monotonic()
            prompts = build_prompts(spec, dirs["prompts"])
            seconds["prompts"] = time.monotonic() - t
            peaks["prompts"] = mem.lap()
            t = time.monotonic()
            lengths = write_traces(dirs["prompts"] / "prompts.parquet", dirs["generate"], args.rows)
            build += time.monotonic() - t
            peaks["build"] = max(peaks["build"], mem.lap())
            gib = sum(f.stat().st_size for f in dirs["generate"].iterdir()) / 2**30
            print(f"built {len(lengths):,} traces in {build:.0f} s ({gib:.2f} GiB of Parquet, zstd): "
                  f"median {np.median(lengths):,.0f} characters, p99 {np.percentile(lengths, 99):,.0f}, "
                  f"mean {lengths.mean():,.0f}", flush=True)
            t = time.monotonic()
            verified = verify_stage(dirs["generate"], dirs["verify"], Filter(), workers=os.cpu_count() or 1,
                                    benchmarks=[Benchmark(name="math500")])
            seconds["verify"] = time.monotonic() - t
            peaks["verify"] = mem.lap()
            t = time.monotonic()
            sft = build_sft_dataset(dirs["verify"], dirs["sft"])
            seconds["sft"] = time.monotonic() - t
            peaks["sft"] = mem.lap()
            t = time.monotonic()
            tok = tokenizer_for(Student(name="bench", base="smollm2-135m", max_length=MAX_LENGTH))
            ds, too_long, tokens = tokenized_sft(dirs["sft"], tok, MAX_LENGTH)
            seconds["tokenise"] = time.monotonic() - t
            peaks["tokenise"] = mem.lap()
            wall = sum(seconds.values())  # the stages alone: building the synthetic traces is not timed
            examples = len(ds)
            del ds
        print(f"prompts {prompts['problems']:,} problems | verify {verified['generated']:,} traces, "
              f"{verified['kept']:,} kept ({dict(list(verified['reasons'].items())[:4])}) | sft {sft['examples']:,} "
              f"examples ({sft['reasoning']:,} reasoning, {sft['non_reasoning']:,} non-reasoning) | tokenised "
              f"{examples:,} examples, {tokens:,} tokens, {too_long:,} over {MAX_LENGTH:,} tokens dropped")
        print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in seconds.items())
              + f"; traces/s through all stages {args.rows / max(wall, 1e-9):,.0f}")
        largest = max(mem.per_process.values(), default=0)
        print(f"peak memory of the process tree: RSS {mem.peak_rss / 1e9:.2f} GB, PSS {mem.peak_pss / 1e9:.2f} GB, "
              f"RSS less file-backed pages {mem.peak_anon / 1e9:.2f} GB; "
              f"largest single process RSS {largest / 1e9:.2f} GB; {len(mem.per_process)} processes seen; tree RSS "
              f"peak per step (GB): " + ", ".join(f"{k} {v:.2f}" for k, v in peaks.items())
              + "; this process's RSS after each step (GB): " + ", ".join(f"{v:.2f}" for v in mem.own))
        print(f"rows {len(lengths)} wall_s {wall:.1f} peak_rss_gb {mem.peak_rss / 1e9:.2f}")
    finally:
        if not (args.keep or args.dir):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
