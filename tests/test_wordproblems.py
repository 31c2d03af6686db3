"""The arith_steps generator: seeded, 2-4 operations, train and test disjoint down to their 8-grams, shipped files
equal to what the seed writes, and both registered in datasets_spec/."""

import json

from distill import catalog, wordproblems
from distill.verify.decontam import Decontaminator


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_shipped_files_are_what_the_seed_writes(tmp_path):
    for split, path in wordproblems.FILES.items():
        fresh = tmp_path / f"{split}.jsonl"
        wordproblems.write_jsonl(wordproblems.generate(split, wordproblems.SIZES[split], wordproblems.SEED), fresh)
        assert fresh.read_bytes() == path.read_bytes(), f"{path} differs: rerun python -m distill.wordproblems"


def test_problems_have_two_to_four_operations_and_whole_answers():
    train, test = (_rows(wordproblems.FILES[s]) for s in ("train", "test"))
    assert len(test) >= 500 and len(train) >= 1000
    for r in train + test:
        assert 2 <= r["operations"] <= 4
        assert int(r["answer"]) >= 0 and str(int(r["answer"])) == r["answer"]
        assert r["question"].count(".") >= r["operations"] + 1  # a start, one sentence per operation, a question
    assert {r["operations"] for r in test} == {2, 3, 4}


def test_a_problem_reads_as_its_arithmetic():
    # seed-stable example: the first test problem, worked by hand
    first = _rows(wordproblems.FILES["test"])[0]
    assert first["question"] == ("Umar owns 14 beads. The number of beads in the tin doubles. Umar sells 3 beads. "
                                 "Umar divides the beads into 5 even parts and keeps a single part. Umar sells 2 "
                                 "beads. What is the count of beads Umar holds now?")
    assert first["answer"] == str((14 * 2 - 3) // 5 - 2)


def test_train_and_test_share_no_problem_and_no_8_gram():
    train = [r["question"] for r in _rows(wordproblems.FILES["train"])]
    test = [r["question"] for r in _rows(wordproblems.FILES["test"])]
    assert not set(train) & set(test)
    decontam = Decontaminator(texts={"arith_steps_test": test}, n=8)
    assert [q for q in train if decontam.match(q)] == []


def test_registered_as_benchmark_and_source():
    test, train = catalog.get("arith_steps_test"), catalog.get("arith_steps_train")
    assert test.loader.path.endswith("benchmarks/arith_steps_test.jsonl") and test.answer_format == "plain"
    assert train.loader.path.endswith("data/arith_steps_train.jsonl")
