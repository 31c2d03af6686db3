"""The mix is what the spec says: per-domain targets held after verification (shortfall in the funnel and the
report), `prompts.shuffle_seed` shuffles deterministically, non-reasoning prompts get their own template and
their SFT examples no think block unless asked, and bad input is one line naming the field."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distill import mixture
from distill.pipeline.prompts import build_prompts
from distill.pipeline.sft import build_sft_dataset
from distill.pipeline.stages import STAGES
from distill.report.data import targets_text
from distill.spec import Filter, Prompts, SpecError, parse_spec
from distill.verify import verify_stage
from tests.conftest import write_jsonl

CHAT = ["Write a two-line poem about rain.", "Name three rivers in Europe.", "How do I boil an egg?",
        "Suggest a title for a mystery novel.", "Translate 'good morning' into French.", "What is a haiku?",
        "Give me a packing list for a beach trip.", "Describe a sunset to someone who cannot see.",
        "Write a limerick about a cat.", "Recommend a board game for four people.", "Why is the sky blue?",
        "Summarise the plot of Hamlet in one sentence."]
MATH = [f"What is {i} + {i}?" for i in range(40)]


def _sources(tmp_path) -> list[dict]:
    math = write_jsonl(tmp_path / "sums.jsonl", [{"problem": q, "answer": str(2 * i)} for i, q in enumerate(MATH)])
    chat = write_jsonl(tmp_path / "poems.jsonl", [{"problem": q} for q in CHAT])
    return [{"path": str(math)}, {"path": str(chat), "answer_format": "none", "domain": "chat"}]


def _prompts(tmp_path, name: str, **over) -> list[dict]:
    out = tmp_path / name
    out.mkdir()
    build_prompts(Prompts(sources=_sources(tmp_path), **over), out)
    return pq.read_table(out / "prompts.parquet").to_pylist()


# ---------------------------------------------------------------- prompts

def test_shuffle_seed_shuffles_deterministically(tmp_path):
    a, again, other = _prompts(tmp_path, "a"), _prompts(tmp_path, "again"), _prompts(tmp_path, "b", shuffle_seed=7)
    ids = [r["problem_id"] for r in a]
    assert ids == [r["problem_id"] for r in again]  # the same seed, the same order
    assert ids != [r["problem_id"] for r in other] and sorted(ids) == sorted(r["problem_id"] for r in other)
    problems = [r["problem"] for r in a]
    assert problems != MATH + CHAT and sorted(problems) == sorted(MATH + CHAT)  # shuffled, nothing lost
    assert ids == sorted(ids, key=lambda p: mixture.shuffle_key(0, p))  # the order is the keyed hash's
    # the chat prompts are spread over the file, not left as its last 12 rows
    chat_rows = [i for i, r in enumerate(a) if r["domain"] == "chat"]
    assert chat_rows[0] < len(a) - len(CHAT)


def test_shuffle_in_many_buckets_is_the_same_order(tmp_path, monkeypatch):
    table = pa.table({"problem_id": [f"id-{i}" for i in range(1000)], "n": list(range(1000))})
    pq.write_table(table, tmp_path / "one.parquet")
    pq.write_table(table, tmp_path / "many.parquet", row_group_size=64)
    mixture.shuffle_prompts(tmp_path / "one.parquet", 3)
    monkeypatch.setattr(mixture, "ROWS_PER_BUCKET", 37)  # 28 buckets, each sorted alone
    monkeypatch.setattr(mixture, "READ_ROWS", 100)
    mixture.shuffle_prompts(tmp_path / "many.parquet", 3)
    one, many = pq.read_table(tmp_path / "one.parquet"), pq.read_table(tmp_path / "many.parquet")
    assert one.equals(many) and one.column("n").to_pylist() != list(range(1000))
    assert sorted(one.column("n").to_pylist()) == list(range(1000))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.parquet", "one.parquet"]  # no work files left


def test_non_reasoning_prompts_have_their_own_template(tmp_path):
    rows = {r["problem"]: r for r in _prompts(tmp_path, "p")}
    assert rows[CHAT[0]]["prompt"] == CHAT[0]  # no \boxed{} instruction for a poem
    assert rows[MATH[3]]["prompt"].startswith(MATH[3]) and "\\boxed{}" in rows[MATH[3]]["prompt"]
    custom = {r["problem"]: r for r in _prompts(tmp_path, "q", non_reasoning_template="Answer briefly.\n\n{problem}")}
    assert custom[CHAT[1]]["prompt"] == f"Answer briefly.\n\n{CHAT[1]}"
    assert custom[MATH[1]]["prompt"] == rows[MATH[1]]["prompt"]


# ---------------------------------------------------------------- spec

def _spec(tmp_path, **over) -> dict:
    data = {"name": "x", "output_dir": "o", "teacher": {"model": "m"}, "prompts": {"sources": _sources(tmp_path)},
            "students": [{"name": "s", "base": "b"}]}
    for key, value in over.items():
        section, field = key.split(".")
        data.setdefault(section, {})[field] = value
    return data


@pytest.mark.parametrize("over,message", [
    ({"filter.domain_targets": {"math": 10, "code": 5}},
     "filter: domain_targets: no prompt source provides domain 'code' (the sources provide: chat, math)"),
    ({"filter.domain_targets": {"math": 0}}, "filter.domain_targets.math: Input should be greater than or equal to 1"),
    ({"prompts.non_reasoning_template": "Be brief."}, "prompts.non_reasoning_template: template must contain {problem}"),
    ({"filter.workers": 0}, "filter.workers: Input should be greater than or equal to 1"),
    ({"sft.think_non_reasoning": "sometimes"}, "sft.think_non_reasoning: Input should be a valid boolean, unable to "
                                               "interpret input"),
])
def test_bad_mix_settings_are_one_line_naming_the_field(tmp_path, over, message):
    with pytest.raises(SpecError) as e:
        parse_spec(_spec(tmp_path, **over))
    assert str(e.value) == message


def test_a_catalog_mixture_provides_its_parts_domains(tmp_path):
    data = _spec(tmp_path, **{"filter.domain_targets": {"math": 600_000, "chat": 200_000}})
    data["prompts"] = {"sources": [{"dataset": "r1_recipe"}]}
    assert parse_spec(data).filter.domain_targets == {"math": 600_000, "chat": 200_000}


def _covers(spec) -> dict:
    run = SimpleNamespace(spec=spec, markers={})
    return {st.name: json.dumps(st.covers(run, "s"), sort_keys=True, default=str) for st in STAGES
            if st.name in ("prompts", "generate", "verify", "sft")}


def test_targets_and_workers_are_filter_settings_that_keep_generation(tmp_path):
    base = _covers(parse_spec(_spec(tmp_path)))
    targets = _covers(parse_spec(_spec(tmp_path, **{"filter.domain_targets": {"math": 5}})))
    workers = _covers(parse_spec(_spec(tmp_path, **{"filter.workers": 64})))
    assert targets["prompts"] == base["prompts"] and targets["generate"] == base["generate"]
    assert targets["verify"] != base["verify"]  # a new target re-runs the filter, not the teacher
    assert workers == base  # where verification runs never redoes it
    think = _covers(parse_spec(_spec(tmp_path, **{"sft.think_non_reasoning": True})))
    assert think["sft"] != base["sft"] and think["verify"] == base["verify"]
    template = _covers(parse_spec(_spec(tmp_path, **{"prompts.non_reasoning_template": "Q: {problem}"})))
    assert template["prompts"] != base["prompts"]
    # the defaults add nothing: runs made before these fields existed keep their fingerprints
    plain = parse_spec(_spec(tmp_path))
    assert json.loads(base["prompts"])[0] == {k: v for k, v in plain.prompts.model_dump().items()
                                              if k != "non_reasoning_template"}
    assert json.loads(base["verify"])[0] == {k: v for k, v in plain.filter.model_dump().items()
                                             if k not in ("workers", "domain_targets")}
    assert json.loads(base["sft"]) == []


# ---------------------------------------------------------------- verify: the targets

def _trace(i: int, answer: str) -> str:
    steps = ["I add the two numbers digit by digit.", "Carrying is not needed here at all.",
             "I check the sum by subtracting one term back.", "The result matches the estimate I made."]
    body = " ".join(f"{steps[(i + k) % 4]} (step {i}.{k})" for k in range(4))
    return f"<think>\n{body}\n</think>\n\nThe final answer is $\\boxed{{{answer}}}$."


def _traces(tmp_path) -> list[dict]:
    rows = []
    for p in range(3):  # math: 3 problems x 4 samples, all correct
        for s in range(4):
            rows.append({"problem_id": f"m{p}", "problem": MATH[p], "answer": str(2 * p), "answer_format": "plain",
                         "domain": "math", "sample_index": s, "prompt": MATH[p], "response": _trace(10 * p + s, str(2 * p)),
                         "finish_reason": "stop"})
    for c in range(5):  # chat: 5 problems, one answer each
        rows.append({"problem_id": f"c{c}", "problem": CHAT[c], "answer": "", "answer_format": "none",
                     "domain": "chat", "sample_index": 0, "finish_reason": "stop", "prompt": CHAT[c],
                     "response": f"<think>\nA poem about {c}: keep it short.\n</think>\n\n{c} stands alone,\n{c} is home."})
    gen = tmp_path / "generate"
    gen.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), gen / "shard-000000.parquet")
    return rows


def test_domain_targets_keep_up_to_the_target_spread_over_problems(tmp_path):
    _traces(tmp_path)
    out = tmp_path / "verify"
    out.mkdir()
    stats = verify_stage(tmp_path / "generate", out, Filter(domain_targets={"math": 5, "chat": 8}))
    kept = pq.read_table(out / "kept.parquet").to_pylist()
    # every math problem's first trace, then the second of the first two problems; chat is short of its target
    assert [(r["problem_id"], r["sample_index"]) for r in kept if r["domain"] == "math"] == \
        [("m0", 0), ("m0", 1), ("m1", 0), ("m1", 1), ("m2", 0)]
    assert sum(r["domain"] == "chat" for r in kept) == 5 == stats["kept"] - 5
    assert stats["domain_targets"] == {"math": {"target": 5, "kept": 5, "short": 0, "over": 7},
                                       "chat": {"target": 8, "kept": 5, "short": 3, "over": 0}}
    steps = {s["step"]: s for s in stats["funnel"]}
    assert steps["domain_targets"]["dropped"] == {"over_domain_target": 7}
    assert steps["kept"]["targets"] == stats["domain_targets"] and steps["kept"]["remaining"] == 10
    assert stats["problems_with_kept_trace"] == 8
    traces = pq.read_table(out / "traces.parquet").to_pylist()
    assert sum(t["reason"] == "over_domain_target" for t in traces) == 7
    assert targets_text(stats["domain_targets"]) == "math: 5 of 5, chat: 5 of 8 (3 short)"


def test_same_targets_same_rows(tmp_path):
    kept = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _traces(tmp_path / name)
        out = tmp_path / name / "verify"
        out.mkdir()
        verify_stage(tmp_path / name / "generate", out, Filter(domain_targets={"math": 4}))
        kept.append(pq.read_table(out / "kept.parquet").to_pylist())
    assert kept[0] == kept[1] and sum(r["domain"] == "math" for r in kept[0]) == 4


# ---------------------------------------------------------------- sft: non-reasoning without a think block

@pytest.mark.parametrize("keep", [False, True])
def test_non_reasoning_sft_examples_have_no_think_block_unless_asked(tmp_path, keep):
    _traces(tmp_path)
    verify = tmp_path / "verify"
    verify.mkdir()
    verify_stage(tmp_path / "generate", verify, Filter())
    out = tmp_path / "sft"
    out.mkdir()
    stats = build_sft_dataset(verify, out, think_non_reasoning=keep)
    rows = pq.read_table(out / "train.parquet").to_pylist()
    turns = {r["problem_id"]: r["completion"][0]["content"] for r in rows if r["sample_index"] == 0}
    assert stats["non_reasoning"] == 5
    expected = "<think>\nA poem about 3: keep it short.\n</think>\n\n3 stands alone,\n3 is home." if keep else \
        "3 stands alone,\n3 is home."
    assert turns["c3"] == expected
    assert turns["m1"].startswith("<think>\n") and turns["m1"].endswith("The final answer is $\\boxed{2}$.")


def test_non_reasoning_turn_units():
    assert mixture.non_reasoning_turn("Just this.", False) == "Just this."
    assert mixture.non_reasoning_turn("<think>a</think>b</think> Answer.", False) == "Answer."
    assert mixture.non_reasoning_turn("</think>Answer.", True) == "Answer."  # no reasoning written: nothing kept
    assert mixture.non_reasoning_turn("<think> hm </think>\nAnswer.", True) == "<think>\nhm\n</think>\n\nAnswer."


def test_a_non_reasoning_trace_with_nothing_after_its_reasoning_is_dropped(tmp_path):
    rows = copy.deepcopy(_traces(tmp_path))[-2:]
    rows[0]["response"] = "<think>\nOnly thoughts, never an answer.\n</think>\n\n"
    (tmp_path / "g2").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "g2" / "shard-000000.parquet")
    out = tmp_path / "v2"
    out.mkdir()
    stats = verify_stage(tmp_path / "g2", out, Filter())
    assert stats["reasons"] == {"empty_answer": 1, "unreferenced": 1} and stats["kept"] == 1


def test_the_report_funnel_names_each_domains_shortfall(tmp_path):
    from distill.report import write_report
    from tests.report_runs import make_run

    run = make_run(tmp_path / "run")
    stats_path = run / "verify" / "stats.json"
    stats = json.loads(stats_path.read_text())
    targets = {"math": {"target": stats["kept"], "kept": stats["kept"], "short": 0, "over": 0},
               "chat": {"target": 200, "kept": 0, "short": 200, "over": 0}}
    stats["funnel"][-1]["targets"] = stats["domain_targets"] = targets  # as verify writes them
    stats_path.write_text(json.dumps(stats))
    html = write_report(run).read_text()
    assert f"math: {stats['kept']:,} of {stats['kept']:,}, chat: 0 of 200 (200 short)" in html
