"""The verify & filter stage end to end on small Parquet inputs: trace filters, dedup, decontamination, the
per-problem cap, the funnel in the stats, streaming over several part files, and `distill verify` with filters."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill.spec import Filter
from distill.verify import STEPS, verify_file, verify_stage
from distill.verify.decontam import Decontaminator, load_benchmark
from distill.verify.filters import mixes_languages, repetition
from tests.conftest import write_jsonl

REASONING = [
    "First I rewrite the equation so that every term sits on one side, then I factor the quadratic.",
    "Checking the discriminant tells me whether the roots are real; here it is positive, so two roots.",
    "Now I substitute back to make sure nothing was lost when both sides were squared earlier.",
    "The constraint on the domain removes one candidate, which leaves the value I found before.",
    "As a sanity check I estimate the size of the answer and it is consistent with the bound.",
]


def trace(i: int, answer: str, extra: str = "") -> str:
    body = " ".join(REASONING[(i + k) % len(REASONING)] + f" Step {i}-{k}." for k in range(6))
    return f"<think>\n{body}{extra}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def row(pid: str, problem: str, answer: str, response: str, sample: int = 0, finish: str = "stop") -> dict:
    return {"problem_id": pid, "problem": problem, "answer": answer, "answer_format": "plain", "prompt": problem,
            "sample_index": sample, "response": response, "finish_reason": finish, "completion_tokens": 10}


def run(tmp_path, rows, f: Filter | None = None, parts: int = 1, benchmarks=None, workers: int = 1):
    gen = tmp_path / "generate"
    gen.mkdir(exist_ok=True)
    table = pa.Table.from_pylist(rows)
    step = -(-len(rows) // parts)
    for k in range(parts):
        pq.write_table(table.slice(k * step, step), gen / f"shard-{k:06d}.parquet")
    out = tmp_path / "verify"
    out.mkdir(exist_ok=True)
    stats = verify_stage(gen, out, f or Filter(), workers=workers, benchmarks=benchmarks)
    return stats, pq.read_table(out / "traces.parquet").to_pylist(), pq.read_table(out / "kept.parquet").to_pylist()


def reasons(traces) -> list[str]:
    return [t["reason"] for t in traces]


def test_each_filter_has_its_reason(tmp_path):
    loop = "<think>\n" + "I will try again. Let me recompute the sum of the digits. " * 80 + "\n</think>\n\\boxed{7}"
    rows = [
        row("a", "What is 3 + 4?", "7", trace(0, "7")),                                     # kept
        row("b", "What is 2 + 5?", "7", trace(1, "7"), finish="length"),                      # truncated
        row("c", "What is 1 + 6?", "7", "The answer is \\boxed{7}."),                         # missing_think
        row("d", "What is 0 + 7?", "7", "<think>\nhmm 7"),                                     # unclosed_think
        row("e", "What is 8 - 1?", "7", loop),                                                # repetition
        row("f", "What is 9 - 2?", "7", trace(2, "7", " 所以答案是七，我们再检查一下。")),        # language_mixing
        row("g", "What is 10 - 3?", "7", "<think>\n" + REASONING[0] + "\n</think>\n\n"),        # empty_answer
        row("h", "What is 11 - 4?", "7", trace(3, "8")),                                      # incorrect
        row("i", "What is 12 - 5?", "7", trace(4, "7").split("The final")[0] + "So it is 7."),  # no_answer
        row("j", "What is 13 - 6?", "7", "x" * 10 + "<think>a</think>\\boxed{7}"),             # too_short
    ]
    stats, traces, kept = run(tmp_path, rows, Filter(require_think=True, min_chars=60))
    assert reasons(traces) == ["correct", "truncated", "missing_think", "unclosed_think", "repetition",
                               "language_mixing", "empty_answer", "incorrect", "no_answer", "too_short"]
    assert [k["problem_id"] for k in kept] == ["a"]
    # `correct` is the answer alone: the looping, language-mixing, think-less and short traces all boxed 7
    assert [t["correct"] for t in traces] == [True, False, True, False, True, True, False, False, False, True]
    assert [t["kept"] for t in traces] == [True] + [False] * 9
    assert [t["extracted"] for t in traces][4:6] == ["7", "7"]
    assert stats["generated"] == 10 and stats["kept"] == 1 and stats["correct"] == 5
    assert stats["correct_not_kept"] == {"missing_think": 1, "repetition": 1, "language_mixing": 1, "too_short": 1}
    assert stats["outcomes"] == {"correct": 5, "incorrect": 1}
    assert sum(stats["reasons"].values()) == 10


def test_funnel_is_ordered_and_adds_up(tmp_path):
    rows = [row(f"p{i}", f"Compute the value of problem number {i} in the list.", str(i), trace(i * 4 + s, str(i)), s)
            for i in range(5) for s in range(3)]
    rows[1]["finish_reason"] = "length"
    rows[5]["response"] = trace(99, "wrong")
    stats, traces, kept = run(tmp_path, rows, Filter(max_per_problem=2), parts=3)
    json.dumps(stats)  # plain JSON
    funnel = stats["funnel"]
    assert [s["step"] for s in funnel] == ["generated", *[name for name, _ in STEPS], "kept"]
    remaining = funnel[0]["remaining"]
    for step in funnel[1:-1]:
        remaining -= sum(step["dropped"].values())
        assert step["remaining"] == remaining
    assert funnel[-1]["remaining"] == stats["kept"] == remaining == len(kept)
    assert stats["reasons"]["over_per_problem_cap"] == 3
    assert {s["step"]: s.get("dropped") for s in funnel}["trace_filters"] == {"truncated": 1}
    assert len(traces) == 15 and [t["problem_id"] for t in traces] == [r["problem_id"] for r in rows]  # order kept


def test_exact_and_near_duplicate_traces_keep_the_first(tmp_path):
    base = trace(0, "12")
    near = base.replace("Step 0-3.", "Step zero-three.")
    rows = [row("p", "How many eggs are in a dozen?", "12", base, 0),
            row("p", "How many eggs are in a dozen?", "12", base, 1),                 # exact duplicate
            row("p", "How many eggs are in a dozen?", "12", near, 2),                 # near duplicate
            row("p", "How many eggs are in a dozen?", "12", trace(3, "12"), 3)]       # different reasoning
    # an incorrect trace is never the reason a correct one is dropped
    rows.insert(0, row("q", "How many legs does a spider have?", "8", trace(0, "12")))
    stats, traces, kept = run(tmp_path, rows)
    assert reasons(traces) == ["incorrect", "correct", "duplicate_trace", "near_duplicate_trace", "correct"]
    assert stats["funnel"][5] == {"step": "dedup_traces", "dropped": {"duplicate_trace": 1, "near_duplicate_trace": 1},
                                  "remaining": 2}


def test_duplicate_problems_need_the_same_answer(tmp_path):
    p = ("A train leaves the station and travels 60 miles in 1.5 hours along a straight track, then stops at "
         "a signal for a while before it continues. The conductor notes the time at every station, and the "
         "passengers count the bridges they cross on the way to the coast, which takes most of the afternoon. "
         "Ignoring the stop, what is its average speed in miles per hour?")
    rows = [row("a", p, "40", trace(0, "40")),
            row("b", p.upper().replace("60 MILES", "$60$ miles,"), "40", trace(1, "40")),  # same words: exact
            row("c", p.replace("Ignoring the", "Ignoring that"), "40", trace(2, "40")),    # near duplicate
            row("d", p.replace("60 miles", "90 miles"), "60", trace(3, "60"))]             # similar text, other answer
    _, traces, _ = run(tmp_path, rows)
    assert reasons(traces) == ["correct", "duplicate_problem", "near_duplicate_problem", "correct"]


def test_decontamination_against_the_evaluated_slice(tmp_path):
    bench = load_benchmark("gsm8k_test", 3)
    assert len(bench) == 3
    leaked = bench[1]
    paraphrase = "Here is a question. " + leaked[20:] + " Please answer."  # shares 8-grams, not the whole text
    later = load_benchmark("gsm8k_test", 10)[9]  # not in the evaluated slice of 3
    rows = [row("x", paraphrase, "1", trace(0, "1")), row("y", later, "1", trace(1, "1")),
            row("z", "What is the capital of France, in one word?", "Paris", trace(2, "Paris"))]
    stats, traces, _ = run(tmp_path, rows, benchmarks=[{"name": "gsm8k_test", "problems": 3}, "aime24"])
    assert reasons(traces) == ["contaminated", "correct", "correct"]
    assert stats["contaminated_by"] == {"gsm8k_test": 1}
    assert stats["funnel"][1] == {"step": "decontaminate", "dropped": {"contaminated": 1}, "remaining": 2}
    # with decontamination off nothing is dropped
    _, traces, _ = run(tmp_path, rows, Filter(decontaminate=False), benchmarks=["gsm8k_test"])
    assert "contaminated" not in reasons(traces)


def test_decontaminator_ngrams():
    d = Decontaminator(texts={"b": ["the quick brown fox jumps over the lazy dog today"]})
    assert d.match("Yesterday THE quick, brown fox jumps over the lazy dog!") == "b"  # punctuation and case ignored
    assert d.match("the quick brown fox jumps over a lazy dog") is None  # no 8 tokens in a row
    assert d.match("short") is None


def test_filters_units():
    assert repetition("ab" * 3000) > 0.9
    assert repetition(" ".join(REASONING * 2)) < 0.6
    assert repetition(" ".join(REASONING)) < 0.1
    assert mixes_languages("latin", "x = 2 so 所以 x^2 = 4 and the answer is 4") is False  # 2 foreign letters < 5
    assert mixes_languages("latin", "x = 2 所以我们得到 x^2 = 4") is True
    assert mixes_languages("latin", "Let θ = π/2, so sin θ = 1 — Greek letters are math, not a language") is False
    assert mixes_languages("cjk", "设 x = 2，则 x^2 = 4，所以答案是 4。") is False
    assert mixes_languages("cjk", "设 x = 2，则 Поэтому ответ 4 и всё") is True


def test_parallel_workers_match_in_process(tmp_path):
    rows = [row(f"p{i % 300}", f"Problem {i % 300}: add {i % 300} and {i % 300}.", str(2 * (i % 300)),
                trace(i, str(2 * (i % 300)) if i % 3 else "0.5"), i // 300) for i in range(4200)]
    s1, t1, _ = run(tmp_path / "a", rows, workers=1) if (tmp_path / "a").mkdir() is None else None
    s2, t2, _ = run(tmp_path / "b", rows, workers=2) if (tmp_path / "b").mkdir() is None else None
    assert reasons(t1) == reasons(t2)
    assert s1["reasons"] == s2["reasons"] and s1["funnel"] == s2["funnel"]


def test_verify_file_with_filters_and_stats(tmp_path):
    rows = [{"problem": "What is 2 + 2?", "answer": "4", "response": trace(0, "4")},
            {"problem": "What is 2 + 2?", "answer": "4", "response": trace(0, "4")},
            {"problem": "Name a colour.", "answer": "", "response": "Blue."}]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    counts = verify_file(src, tmp_path / "out.parquet", stats_path=tmp_path / "stats.json")
    assert counts == {"correct": 1, "duplicate_trace": 1, "unreferenced": 1}
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["kept"] for r in out] == [True, False, True]
    assert json.loads((tmp_path / "stats.json").read_text())["kept"] == 2


@pytest.mark.parametrize("keep", [True, False])
def test_unreferenced_rows(tmp_path, keep):
    rows = [row("c1", "Write a haiku about rain.", "", "<think>ok</think>Rain on the tin roof.")]
    stats, traces, kept = run(tmp_path, rows, Filter(keep_unreferenced=keep))
    assert traces[0]["reason"] == "unreferenced" and bool(kept) is keep
    assert stats["kept"] == int(keep)
