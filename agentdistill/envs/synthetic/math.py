"""Seeded arithmetic word problems whose answer a short program computes exactly.

The numbers are chosen so that mental arithmetic is error-prone (multi-digit products, sums of several
3-4 digit numbers) while the result is always a non-negative integer: divisions and percentages are set
up to come out exact. A few fixed templates with swapped-in themes keep the wording consistent, so a tiny
student can learn to map each sentence to one line of code; the plan is that code, with descriptive
variable names taken from the question's nouns.

Each template states its operation count (``ops``), the number of arithmetic steps the solution needs;
``generate_math_task`` picks among the templates whose count lies in ``[min_ops, max_ops]``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from math import gcd
from typing import Any, Callable

from agentdistill.envs.tasks import Task

__all__ = ["MAX_OPS", "MIN_OPS", "generate_math_task"]


@dataclass(frozen=True)
class _Theme:
    """The nouns of one setting. Plurals are explicit (shelf -> shelves) and double as identifiers."""

    place: str
    container: str
    containers: str
    item: str
    items: str
    removed_phrase: str
    removed_var: str
    groups: str
    group: str

    @property
    def subject(self) -> str:
        """The place as a sentence opener with the right article ("A farm", "An orchard")."""
        article = "An" if self.place[0] in "aeiou" else "A"
        return f"{article} {self.place}"


_THEMES: tuple[_Theme, ...] = (
    _Theme("warehouse", "crate", "crates", "bolt", "bolts", "shipped out", "shipped", "stores", "store"),
    _Theme("bakery", "tray", "trays", "cookie", "cookies", "sold", "sold", "cafes", "cafe"),
    _Theme("library", "shelf", "shelves", "book", "books", "lent out", "lent", "schools", "school"),
    _Theme("farm", "basket", "baskets", "apple", "apples", "sold", "sold", "markets", "market"),
    _Theme("factory", "box", "boxes", "screw", "screws", "used", "used", "workshops", "workshop"),
    _Theme("school", "pack", "packs", "pencil", "pencils", "handed out", "handed_out", "classes", "class"),
    _Theme("shop", "carton", "cartons", "egg", "eggs", "sold", "sold", "branches", "branch"),
    _Theme("port", "container", "containers", "barrel", "barrels", "unloaded", "unloaded", "ships", "ship"),
    _Theme("orchard", "bin", "bins", "pear", "pears", "picked up", "picked_up", "trucks", "truck"),
    _Theme("printer", "bundle", "bundles", "poster", "posters", "mailed", "mailed", "offices", "office"),
)

_DAYS: tuple[str, ...] = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")


@dataclass(frozen=True)
class _Problem:
    """One instantiated problem: the question, the named inputs, and the expression combining them."""

    question: str
    variables: tuple[tuple[str, int], ...]
    expression: str
    answer: int

    def code(self) -> str:
        """The expert's program: one assignment per input, the expression, then a print."""
        lines = [f"{name} = {value}" for name, value in self.variables]
        lines += [f"result = {self.expression}", "print(result)"]
        return "\n".join(lines)


def _num(value: int) -> str:
    """Write a number as the question shows it: digit groups separated by commas (1,209)."""
    return f"{value:,}"


# --------------------------------------------------------------------------------------------------
# Templates. Each draws its numbers so that the answer is an exact non-negative integer.
# --------------------------------------------------------------------------------------------------


def _product(rng: random.Random, t: _Theme) -> _Problem:
    """containers * per_container: one multi-digit multiplication."""
    a, b = rng.randint(12, 98), rng.randint(105, 989)
    q = f"{t.subject} holds {a} {t.containers} of {b} {t.items} each. How many {t.items} does it hold?"
    return _Problem(q, ((t.containers, a), (f"per_{t.container}", b)),
                    f"{t.containers} * per_{t.container}", a * b)


def _difference(rng: random.Random, t: _Theme) -> _Problem:
    """total - removed: a subtraction of 4-5 digit numbers."""
    a = rng.randint(2000, 99999)
    c = rng.randint(100, a - 100)
    q = f"{t.subject} has {_num(a)} {t.items}. {_num(c)} {t.items} are {t.removed_phrase}. How many {t.items} remain?"
    return _Problem(q, ((t.items, a), (t.removed_var, c)), f"{t.items} - {t.removed_var}", a - c)


def _product_minus(rng: random.Random, t: _Theme) -> _Problem:
    """containers * per_container - removed."""
    a, b = rng.randint(12, 98), rng.randint(105, 989)
    c = rng.randint(100, a * b - 1)
    q = (f"{t.subject} holds {a} {t.containers} of {b} {t.items} each. {_num(c)} {t.items} are "
         f"{t.removed_phrase}. How many {t.items} remain?")
    return _Problem(q, ((t.containers, a), (f"per_{t.container}", b), (t.removed_var, c)),
                    f"{t.containers} * per_{t.container} - {t.removed_var}", a * b - c)


def _daily_sum(days: int) -> Callable[[random.Random, _Theme], _Problem]:
    """Sum of ``days`` deliveries of 3-4 digits each (``days - 1`` additions)."""

    def build(rng: random.Random, t: _Theme) -> _Problem:
        values = [rng.randint(100, 9999) for _ in range(days)]
        names = [d.lower() for d in _DAYS[:days]]
        parts = [f"{_num(values[0])} {t.items} on {_DAYS[0]}"]
        parts += [f"{_num(v)} on {d}" for v, d in zip(values[1:], _DAYS[1:days])]
        listed = ", ".join(parts[:-1]) + f" and {parts[-1]}"
        q = f"{t.subject} receives {listed}. How many {t.items} does it receive in total?"
        return _Problem(q, tuple(zip(names, values)), " + ".join(names), sum(values))

    return build


def _divisors_between(n: int, low: int, high: int) -> list[int]:
    """Divisors of ``n`` in ``[low, high]``, used to make a split come out exact."""
    return [d for d in range(low, high + 1) if n % d == 0]


def _product_split(rng: random.Random, t: _Theme) -> _Problem:
    """containers * per_container // groups, with groups dividing the product exactly."""
    while True:
        a, b = rng.randint(12, 98), rng.randint(105, 989)
        choices = _divisors_between(a * b, 3, 60)
        if choices:
            c = rng.choice(choices)
            break
    q = (f"{t.subject} holds {a} {t.containers} of {b} {t.items} each. The {t.items} are shared "
         f"equally among {c} {t.groups}. How many {t.items} does each {t.group} get?")
    return _Problem(q, ((t.containers, a), (f"per_{t.container}", b), (t.groups, c)),
                    f"{t.containers} * per_{t.container} // {t.groups}", a * b // c)


def _exact_percent(rng: random.Random) -> int:
    """A percentage from a short list of values people actually quote."""
    return rng.choice((5, 10, 12, 15, 20, 25, 30, 35, 40, 45, 60, 75, 80))


def _percent_remaining(rng: random.Random, t: _Theme) -> _Problem:
    """total - total * percent // 100, with total a multiple that makes the percentage exact."""
    p = _exact_percent(rng)
    step = 100 // gcd(p, 100)
    a = step * rng.randint(200 // step + 1, 99999 // step)
    q = f"{t.subject} has {_num(a)} {t.items}. {p}% of them are {t.removed_phrase}. How many {t.items} remain?"
    return _Problem(q, ((t.items, a), ("percent", p)), f"{t.items} * (100 - percent) // 100",
                    a - a * p // 100)


def _daily_net(rng: random.Random, t: _Theme) -> _Problem:
    """(per_day - damaged) * days."""
    a = rng.randint(120, 999)
    b = rng.randint(3, a // 4)
    c = rng.randint(12, 95)
    q = (f"{t.subject} gets {a} {t.items} each day, but {b} of them are damaged. How many undamaged "
         f"{t.items} does it get in {c} days?")
    return _Problem(q, ((f"{t.items}_per_day", a), ("damaged", b), ("days", c)),
                    f"({t.items}_per_day - damaged) * days", (a - b) * c)


def _change(rng: random.Random, t: _Theme) -> _Problem:
    """paid - count * price, with the payment a round amount above the cost."""
    a, b = rng.randint(12, 98), rng.randint(13, 489)
    cost = a * b
    paid = (cost // 1000 + rng.randint(1, 3)) * 1000
    q = (f"A customer buys {a} {t.items} at {b} dollars each and pays with {_num(paid)} dollars. "
         f"How many dollars of change does the customer get?")
    return _Problem(q, ((t.items, a), ("price", b), ("paid", paid)), f"paid - {t.items} * price",
                    paid - cost)


def _two_removals(rng: random.Random, t: _Theme) -> _Problem:
    """containers * per_container - removed on Monday - removed on Tuesday."""
    a, b = rng.randint(12, 98), rng.randint(105, 989)
    total = a * b
    c = rng.randint(100, total // 2)
    d = rng.randint(100, max(100, total - c - 1))
    q = (f"{t.subject} holds {a} {t.containers} of {b} {t.items} each. {_num(c)} {t.items} are "
         f"{t.removed_phrase} on Monday and {_num(d)} on Tuesday. How many {t.items} remain?")
    return _Problem(q, ((t.containers, a), (f"per_{t.container}", b), ("monday", c), ("tuesday", d)),
                    f"{t.containers} * per_{t.container} - monday - tuesday", total - c - d)


def _two_sizes(rng: random.Random, t: _Theme) -> _Problem:
    """small * per_small + large * per_large."""
    a, b = rng.randint(12, 98), rng.randint(24, 299)
    c, d = rng.randint(12, 98), rng.randint(300, 989)
    q = (f"{t.subject} has {a} small {t.containers} of {b} {t.items} each and {c} large "
         f"{t.containers} of {d} {t.items} each. How many {t.items} does it have in total?")
    return _Problem(q, (("small", a), ("per_small", b), ("large", c), ("per_large", d)),
                    "small * per_small + large * per_large", a * b + c * d)


def _packed_deliveries(rng: random.Random, t: _Theme) -> _Problem:
    """(first + second + third) // per_container, with the sum a multiple of per_container."""
    d = rng.randint(12, 48)
    a, b = rng.randint(100, 9999), rng.randint(100, 9999)
    c = rng.randint(100, 9000)
    c += (-(a + b + c)) % d
    q = (f"{t.subject} receives three deliveries of {_num(a)}, {_num(b)} and {_num(c)} {t.items}. "
         f"The {t.items} are packed into {t.containers} of {d} each. How many {t.containers} are filled?")
    return _Problem(q, (("first", a), ("second", b), ("third", c), (f"per_{t.container}", d)),
                    f"(first + second + third) // per_{t.container}", (a + b + c) // d)


def _product_percent(rng: random.Random, t: _Theme) -> _Problem:
    """total - total * percent // 100 where total = containers * per_container."""
    p = _exact_percent(rng)
    step = 100 // gcd(p, 100)
    a = rng.randint(12, 98)
    b = step * rng.randint(-(-105 // step), 989 // step)
    total = a * b
    q = (f"{t.subject} holds {a} {t.containers} of {b} {t.items} each. {p}% of the {t.items} are "
         f"{t.removed_phrase}. How many {t.items} remain?")
    return _Problem(q, ((t.containers, a), (f"per_{t.container}", b), ("percent", p)),
                    f"{t.containers} * per_{t.container} * (100 - percent) // 100",
                    total - total * p // 100)


def _two_sizes_minus(rng: random.Random, t: _Theme) -> _Problem:
    """small * per_small + large * per_large - removed."""
    base = _two_sizes(rng, t)
    e = rng.randint(100, base.answer - 1)
    q = base.question.replace(
        f" How many {t.items} does it have in total?",
        f" {_num(e)} {t.items} are {t.removed_phrase}. How many {t.items} remain?",
    )
    return _Problem(q, base.variables + ((t.removed_var, e),),
                    f"{base.expression} - {t.removed_var}", base.answer - e)


def _split_rest(rng: random.Random, t: _Theme) -> _Problem:
    """(containers * per_container - removed) // groups, with groups dividing the rest exactly."""
    a, b = rng.randint(12, 98), rng.randint(105, 989)
    g = rng.randint(3, 40)
    rest = g * rng.randint(max(1, a * b // (4 * g)), (a * b - 100) // g)
    c = a * b - rest
    q = (f"{t.subject} holds {a} {t.containers} of {b} {t.items} each. {_num(c)} {t.items} are "
         f"{t.removed_phrase}, and the rest are shared equally among {g} {t.groups}. How many "
         f"{t.items} does each {t.group} get?")
    return _Problem(q, ((t.containers, a), (f"per_{t.container}", b), (t.removed_var, c), (t.groups, g)),
                    f"({t.containers} * per_{t.container} - {t.removed_var}) // {t.groups}", rest // g)


@dataclass(frozen=True)
class _Template:
    """A named problem builder and the number of arithmetic steps its solution takes."""

    name: str
    ops: int
    build: Callable[[random.Random, _Theme], _Problem]


_TEMPLATES: tuple[_Template, ...] = (
    _Template("product", 1, _product),
    _Template("difference", 1, _difference),
    _Template("product_minus", 2, _product_minus),
    _Template("sum3", 2, _daily_sum(3)),
    _Template("product_split", 2, _product_split),
    _Template("percent_remaining", 2, _percent_remaining),
    _Template("daily_net", 2, _daily_net),
    _Template("change", 2, _change),
    _Template("two_removals", 3, _two_removals),
    _Template("two_sizes", 3, _two_sizes),
    _Template("packed_deliveries", 3, _packed_deliveries),
    _Template("product_percent", 3, _product_percent),
    _Template("sum4", 3, _daily_sum(4)),
    _Template("two_sizes_minus", 4, _two_sizes_minus),
    _Template("split_rest", 4, _split_rest),
    _Template("sum5", 4, _daily_sum(5)),
)

MIN_OPS: int = min(t.ops for t in _TEMPLATES)
MAX_OPS: int = max(t.ops for t in _TEMPLATES)


def _plan(problem: _Problem) -> tuple[dict[str, Any], ...]:
    """The scripted expert's route: run the program, then answer with what it printed."""
    answer = str(problem.answer)
    return (
        {"action": "code", "code": problem.code(), "expect": answer},
        {"action": "final_answer", "answer": answer},
    )


def generate_math_task(seed: int, *, min_ops: int = 2, max_ops: int = 3) -> Task:
    """Build the word problem for ``seed``; the same arguments always give the same task.

    ``min_ops``/``max_ops`` bound the number of arithmetic steps (templates exist for 1 to 4).
    The answer is a non-negative integer written in plain digits; ``plan[0]["code"]`` prints it.
    """
    if not MIN_OPS <= min_ops <= max_ops <= MAX_OPS:
        raise ValueError(f"need {MIN_OPS} <= min_ops <= max_ops <= {MAX_OPS}, got {min_ops}, {max_ops}")
    rng = random.Random(seed)
    template = rng.choice([t for t in _TEMPLATES if min_ops <= t.ops <= max_ops])
    problem = template.build(rng, rng.choice(_THEMES))
    return Task(
        task_id=f"synthetic-math-{seed}",
        question=problem.question,
        answer=str(problem.answer),
        plan=_plan(problem),
        metadata={"generator": "synthetic-math", "seed": seed, "ops": template.ops,
                  "template": template.name},
    )
