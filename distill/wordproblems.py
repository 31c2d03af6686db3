"""A seeded generator of multi-step arithmetic word problems: a benchmark a CPU-sized model can move on.

Why it exists: models that fit on a 2-core CPU (SmolLM2-135M) score ~0 on GSM8K and MATH-500, so a run
there cannot show whether distillation taught the student anything: base and student are both at 0 ± 0.
These problems are GSM8K's shape made small: a short story with two to four operations (+, -, x, /) on small
whole numbers, whose answer is computed here, so every reference is right by construction. A 135M model
solves some of them, and most of its failures are of form (no final answer, rambling to the token limit),
which is what a student learns from verified traces.

Train and test are disjoint by construction, not only as rows: the test split draws its people, items and
containers from vocabularies the train split never uses, so no test problem's wording is in the training set
and the run's 8-gram decontamination keeps the train problems (the test measures the skill on new stories).
Both splits are shipped in the repo (`datasets_spec/data/arith_steps_train.jsonl`, the source
`arith_steps_train`; `datasets_spec/benchmarks/arith_steps_test.jsonl`, the benchmark `arith_steps_test`);
`python -m distill.wordproblems` rewrites them, byte for byte, from the seed.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from pathlib import Path

# (name, pronoun, object pronoun) per person; items are plural nouns; each split has its own lists.
_PEOPLE = {
    "train": [("Ann", "she", "her"), ("Ben", "he", "him"), ("Cara", "she", "her"), ("Dan", "he", "him"),
              ("Eva", "she", "her"), ("Finn", "he", "him"), ("Gina", "she", "her"), ("Hugo", "he", "him"),
              ("Ivy", "she", "her"), ("Jack", "he", "him"), ("Kim", "she", "her"), ("Leo", "he", "him"),
              ("Mia", "she", "her"), ("Ned", "he", "him"), ("Olga", "she", "her"), ("Paul", "he", "him")],
    "test": [("Rosa", "she", "her"), ("Sam", "he", "him"), ("Tina", "she", "her"), ("Umar", "he", "him"),
             ("Vera", "she", "her"), ("Walt", "he", "him"), ("Xena", "she", "her"), ("Yuri", "he", "him"),
             ("Zoe", "she", "her"), ("Omar", "he", "him"), ("Lena", "she", "her"), ("Igor", "he", "him")],
}
_ITEMS = {
    "train": ["apples", "pencils", "marbles", "stickers", "shells", "cookies", "books", "coins", "cards",
              "stamps", "buttons", "balloons", "crayons", "grapes", "toy cars", "seeds"],
    "test": ["oranges", "erasers", "beads", "feathers", "pebbles", "muffins", "comics", "tokens", "puzzles",
             "ribbons", "candles", "lemons", "pins", "acorns"],
}
_CONTAINERS = {"train": ["box", "bag", "basket", "jar"], "test": ["crate", "tin", "bucket", "tray"]}

# Wording of each step, {n} the operand: several phrasings per operation, and each split its own, so that no
# run of 8 words (the decontamination n-gram) recurs between train and test.
_WORDING = {
    "train": {
        "start": ["{P} has {n} {items}.", "{P} starts with {n} {items}.", "There are {n} {items} in {P}'s {box}."],
        "add": ["Then {p} gets {n} more.", "{P} finds {n} more {items}.", "A friend gives {o} {n} more {items}."],
        "sub": ["Then {p} gives away {n}.", "{P} loses {n} of them.", "{P} gives {n} {items} to a friend."],
        "mul": ["Then the number of {items} {times}.", "{P} ends up with {n} times as many {items}."],
        "div": ["{P} splits the {items} into {n} equal groups and keeps one group."],
        "question": ["How many {items} does {P} have now?", "How many {items} are left at the end?"],
    },
    "test": {
        "start": ["{P} owns {n} {items}.", "At first {P} keeps {n} {items} in a {box}."],
        "add": ["Later {p} picks up {n} extra.", "{P} is handed {n} extra {items}."],
        "sub": ["Next {p} drops {n}.", "{P} sells {n} {items}."],
        "mul": ["After a trade {P} holds {n} times the {items}.", "The number of {items} in the {box} {times}."],
        "div": ["{P} divides the {items} into {n} even parts and keeps a single part."],
        "question": ["What is the count of {items} {P} holds now?", "In the end, how many {items} remain?"],
    },
}

@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: int
    operations: int


def _step(rng: random.Random, value: int) -> tuple[str, int, int] | None:
    """One operation on the running value: (kind, operand, new value), kept small and whole."""
    kinds = ["add", "sub"] * 2 + ["mul", "div"]
    rng.shuffle(kinds)
    for kind in kinds:
        if kind == "add":
            n = rng.randint(2, 12)
            return kind, n, value + n
        if kind == "sub" and value > 2:
            n = rng.randint(1, min(value - 1, 12))
            return kind, n, value - n
        if kind == "mul" and value <= 15:
            n = rng.choice([2, 3])
            return kind, n, value * n
        if kind == "div":
            divisors = [d for d in (2, 3, 4, 5) if value % d == 0 and value // d >= 1]
            if divisors:
                n = rng.choice(divisors)
                return kind, n, value // n
    return None


def make_problem(rng: random.Random, split: str, index: int) -> Problem:
    name, p, o = rng.choice(_PEOPLE[split])
    items = rng.choice(_ITEMS[split])
    box = rng.choice(_CONTAINERS[split])
    ops = rng.choices([2, 3, 4], weights=[5, 3, 2])[0]
    value = rng.randint(3, 20)
    fill = {"P": name, "p": p, "o": o, "items": items, "box": box}
    wording = _WORDING[split]
    sentences = [rng.choice(wording["start"]).format(n=value, **fill)]
    for _ in range(ops):
        kind, n, value = _step(rng, value)  # add always applies, so a step is always found
        times = {2: "doubles", 3: "triples"}.get(n)
        sentences.append(rng.choice(wording[kind]).format(n=n, times=times, **fill))
    sentences.append(rng.choice(wording["question"]).format(**fill))
    question = " ".join(s[0].upper() + s[1:] for s in sentences)
    return Problem(id=f"arith-{split}-{index:05d}", question=question, answer=value, operations=ops)


def generate(split: str, count: int, seed: int) -> list[Problem]:
    """`count` distinct problems of one split; the same (split, count, seed) always gives the same list."""
    rng = random.Random(f"{seed}-{split}")
    seen: set[str] = set()
    out: list[Problem] = []
    while len(out) < count:
        prob = make_problem(rng, split, len(out))
        if prob.question not in seen:
            seen.add(prob.question)
            out.append(prob)
    return out


def write_jsonl(problems: list[Problem], path: Path) -> None:
    path.write_text("".join(json.dumps({"id": q.id, "question": q.question, "answer": str(q.answer),
                                        "operations": q.operations}) + "\n" for q in problems))


SEED = 17
SIZES = {"train": 2000, "test": 600}
ROOT = Path(__file__).resolve().parent.parent / "datasets_spec"
FILES = {"train": ROOT / "data" / "arith_steps_train.jsonl", "test": ROOT / "benchmarks" / "arith_steps_test.jsonl"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="rewrite the arith_steps train/test files from the seed")
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    for split, path in FILES.items():
        write_jsonl(generate(split, SIZES[split], args.seed), path)
        print(f"{path}: {SIZES[split]} problems")


if __name__ == "__main__":
    main()
