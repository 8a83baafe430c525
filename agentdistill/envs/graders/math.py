"""Grading of math answers (MATH, AIME, GSM-Hard, OlymMATH): is the final answer equal to the gold one?

A prediction's answer is the content of its last ``\\boxed{...}``. Two answers are equivalent when any
of three checks says so, cheapest first:

1. their text is the same up to whitespace;
2. both are plain numbers (``-9867630.0``, ``1,000``) that agree within a relative tolerance (two
   integers must agree exactly);
3. math-verify parses both and finds them equal (fractions, tuples, intervals, sets, matrices,
   expressions), or, when one side is written with a decimal point, both evaluate to numbers within
   the relative tolerance (``0.33333`` against ``\\frac{1}{3}``).

Time bound. Check 3 runs in a child process that is killed when ``timeout_s`` runs out, and the
answer then counts as not equivalent. math-verify's own timeout is a ``SIGALRM`` alarm, which
(a) only works in the main thread and (b) cannot interrupt work that stays inside C: sympy and Python
integer arithmetic on expressions such as ``5^{5^{5^{5^5}}}`` run for minutes without returning to the
interpreter, so the alarm never fires (Math-Verify issue #65). Only a separate process can be
stopped from outside, whatever it is doing and whichever thread waits for it. The child is a
``fork`` of the caller, which costs a few milliseconds and inherits sympy already imported and warmed up;
it is made with ``os.fork`` rather than ``multiprocessing`` so that it also works inside daemonic
worker processes (gymnasium's ``AsyncVectorEnv``), which ``multiprocessing`` forbids to have children.
Forking while other threads run is sound here: the child only computes one verdict and exits, and if a
lock held by another thread at fork time ever stalled it, the deadline would kill it like any other
slow check (Python 3.12+ emits a DeprecationWarning for such forks).
The child's address space is capped a little above the caller's, so that a blow-up cannot take the
machine's memory before the deadline. Where ``fork`` does not exist, a ``spawn``ed process does the
same job, but its interpreter start-up (about a second) counts against ``timeout_s``.
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import os
import re
import select
import signal
from multiprocessing.connection import Connection
from typing import NoReturn

import math_verify
import sympy

from agentdistill.envs.graders.base import Grade
from agentdistill.envs.tasks import Task

__all__ = ["MathGrader", "extract_answer", "is_equivalent"]

logger = logging.getLogger(__name__)

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)
"""A group brace, or an escaped character (``\\{``, ``\\}``, ``\\\\``) that must not count as one."""
_SPACES = re.compile(r"\s*")
_BARE_ARGUMENT = re.compile(r"[^\s${}]+")
"""What ``\\boxed 5`` boxes: the next run of characters that ends a token."""
_PLAIN_NUMBER = re.compile(
    r"[+-]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)
"""An integer or decimal, optionally with thousands commas and an exponent: what ``float`` reads."""
_DECIMAL_POINT = re.compile(r"\.[0-9]")
"""A decimal number somewhere in an answer: the sign that it may be rounded."""
_MAX_POLL_MS = 2**31 - 1
"""``poll`` takes a C int of milliseconds (about 24 days)."""
_MAX_NUMBER_CHARS = 100
"""Longer strings are not treated as plain numbers (keeps the fast path trivially cheap)."""
_MAX_SYMBOLIC_CHARS = 10_000
"""Answers longer than this skip math-verify: no real answer is this long, and parsing it would only
spend the whole time budget."""
_CHILD_MEMORY_HEADROOM = 2 * 1024**3
"""How much address space the checking child may add to what it inherits from the caller."""
_WARM_UP_PAIRS: tuple[tuple[str, str], ...] = (
    (r"\frac{1}{2}", "0.5"),
    (r"\left( 1, \frac{\pi}{3} \right)", r"(1,\pi/3)"),
    (r"(-\infty,-1]\cup [1,\infty)", r"(-\infty,-2]\cup [2,\infty)"),
    ("a^2+2a+1", "(a+1)^2"),
    (r"\sqrt{5}", r"2\sqrt{5}/2"),
    (r"\begin{pmatrix} 3 \\ 4 \end{pmatrix}", r"\begin{pmatrix} 3 \\ 4 \end{pmatrix}"),
    (r"\{3,4\}", r"\{4,3\}"),
    (r"\text{(C)}", "C"),
    (r"5\%", "5"),
    ("x=3", "3"),
)
"""Benign, fixed inputs that exercise math-verify's common paths once in the caller (see _warm_up)."""


def extract_answer(text: str) -> str:
    """The final answer written in ``text``.

    That is the content of the last complete ``\\boxed{...}`` (or ``\\fbox{...}``, or ``\\boxed 5``
    without braces), nested braces included; text without one is taken whole, stripped of surrounding
    whitespace and ``$`` (and ``\\[...\\]`` / ``\\(...\\)``). Runs in time linear in ``len(text)`` and
    never raises: it sees raw model output.
    """
    if not isinstance(text, str):
        return ""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    return _strip_math_delimiters(text)


def _last_boxed(text: str) -> str | None:
    """Content of the last box command whose argument is complete, or None.

    Braces are matched in a single pass over the text from the first box command on, so trying every
    command from the last backwards costs O(1) each: linear overall, even for ``\\boxed{`` repeated a
    million times.
    """
    command_ends = [match.end() for match in _BOX_COMMAND.finditer(text)]
    if not command_ends:
        return None
    closing = _matching_braces(text, command_ends[0])
    for position in reversed(command_ends):
        argument = _box_argument(text, position, closing)
        if argument is not None:
            return argument
    return None


def _matching_braces(text: str, start: int) -> dict[int, int]:
    """Index of each opening brace at or after ``start`` mapped to the index of its closing brace."""
    closing: dict[int, int] = {}
    open_braces: list[int] = []
    for token in _BRACE_TOKEN.finditer(text, start):
        if token.group() == "{":
            open_braces.append(token.start())
        elif token.group() == "}" and open_braces:
            closing[open_braces.pop()] = token.start()
    return closing


def _box_argument(text: str, position: int, closing: dict[int, int]) -> str | None:
    """The argument of the box command that ends at ``position``, or None when it is missing or unclosed."""
    start = _SPACES.match(text, position).end()  # type: ignore[union-attr]  # \s* always matches
    if start >= len(text):
        return None
    if text[start] == "{":
        end = closing.get(start)
        return None if end is None else text[start + 1 : end]
    bare = _BARE_ARGUMENT.match(text, start)
    return bare.group() if bare else None


def _strip_math_delimiters(text: str) -> str:
    """``text`` without surrounding whitespace, ``$`` signs and one pair of ``\\[ \\]`` or ``\\( \\)``."""
    stripped = text.strip().strip("$").strip()
    for opener, closer in ((r"\[", r"\]"), (r"\(", r"\)")):
        if len(stripped) >= 4 and stripped.startswith(opener) and stripped.endswith(closer):
            return stripped[2:-2].strip()
    return stripped


def is_equivalent(prediction: str, gold: str, *, rel_tol: float = 1e-4, timeout_s: float = 5.0) -> bool:
    """Whether ``prediction`` and ``gold`` are the same mathematical answer.

    Both are first reduced with :func:`extract_answer`, then compared by the checks listed in this
    module's docstring. An empty answer is never equivalent to anything.

    Args:
        prediction: the model's answer (or a whole response ending in ``\\boxed{...}``).
        gold: the reference answer, LaTeX or a number written as a string.
        rel_tol: relative tolerance of numeric comparisons when a decimal number is involved.
        timeout_s: time bound of the symbolic check; when it runs out, the answers count as different.

    Returns:
        True when equivalent. Never raises for any string inputs, and returns within about
        ``timeout_s`` plus a few milliseconds (plus a one-off warm-up of well under a second on the
        first call in a process).

    Raises:
        ValueError: when ``rel_tol`` or ``timeout_s`` is not a positive finite number.
    """
    rel_tol = _positive("rel_tol", rel_tol)
    timeout_s = _positive("timeout_s", timeout_s)
    if not isinstance(prediction, str) or not isinstance(gold, str):
        return False
    return _answers_equivalent(extract_answer(prediction), extract_answer(gold), rel_tol, timeout_s)


def _answers_equivalent(predicted: str, gold: str, rel_tol: float, timeout_s: float) -> bool:
    """:func:`is_equivalent` on answers already extracted; falls through the checks cheapest first."""
    try:
        if not predicted or not gold:
            return False
        if " ".join(predicted.split()) == " ".join(gold.split()):
            return True
        numeric = _compare_plain_numbers(predicted, gold, rel_tol)
        if numeric is not None:
            return numeric
        if len(predicted) > _MAX_SYMBOLIC_CHARS or len(gold) > _MAX_SYMBOLIC_CHARS:
            return False
        return _check_in_child(predicted, gold, rel_tol, timeout_s)
    except Exception:  # the contract is "never raises": an unexpected failure grades as not equivalent
        logger.warning("math equivalence check failed; counting the answer as wrong", exc_info=True)
        return False


def _compare_plain_numbers(predicted: str, gold: str, rel_tol: float) -> bool | None:
    """The verdict when both answers are plain numbers, else None (undecided).

    Two integers must be equal: a count off by one is wrong however large it is. With a decimal point
    or exponent on either side, the numbers only need to agree within ``rel_tol``, which absorbs
    rounding (``13138980.0`` against ``13138980``). The verdict is final so that math-verify's own
    6-decimal rounding cannot loosen the caller's tolerance.
    """
    first, second = _plain_number(predicted), _plain_number(gold)
    if first is None or second is None:
        return None
    if isinstance(first, int) and isinstance(second, int):
        return first == second
    x, y = float(first), float(second)
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    return math.isclose(x, y, rel_tol=rel_tol)


def _plain_number(text: str) -> int | float | None:
    """``text`` as an int (no point, no exponent) or a float, or None if it is not a plain number.

    LaTeX thousands separators (``10,\\!000``, ``1{,}000``) are read as commas.
    """
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    cleaned = text.replace(r"\!", "").replace("{,}", ",")
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        return None
    digits = cleaned.replace(",", "")
    if "." in digits or "e" in digits or "E" in digits:
        return float(digits)
    return int(digits)


def _check_in_child(predicted: str, gold: str, rel_tol: float, timeout_s: float) -> bool:
    """Run :func:`_symbolic_verdict` in a child process that is killed after ``timeout_s``."""
    _warm_up()
    if hasattr(os, "fork"):
        return _run_forked(predicted, gold, rel_tol, timeout_s)
    return _run_spawned(predicted, gold, rel_tol, timeout_s)


def _run_forked(predicted: str, gold: str, rel_tol: float, timeout_s: float) -> bool:
    """Fork a child that writes one byte (``1`` equivalent, ``0`` not) to a pipe, and wait for it."""
    read_fd, write_fd = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(read_fd)
        os.close(write_fd)
        logger.warning("could not fork for a math equivalence check; counting the answer as wrong", exc_info=True)
        return False
    if pid == 0:
        _forked_child(read_fd, write_fd, predicted, gold, rel_tol, timeout_s)
    os.close(write_fd)
    try:
        return _read_verdict(read_fd, timeout_s)
    finally:
        os.close(read_fd)
        _kill_and_reap(pid)


def _forked_child(
    read_fd: int, write_fd: int, predicted: str, gold: str, rel_tol: float, timeout_s: float
) -> NoReturn:
    """Body of the forked child: compute, report, and leave with ``os._exit``.

    ``os._exit`` in ``finally`` guarantees the child never returns into the caller's stack (which would
    run the caller's code twice) and never runs its atexit handlers or flushes its buffers.
    """
    status = 1
    try:
        os.close(read_fd)
        _cap_address_space()
        verdict = _symbolic_verdict(predicted, gold, rel_tol, _inner_timeout(timeout_s))
        os.write(write_fd, b"1" if verdict else b"0")
        status = 0
    finally:
        os._exit(status)


def _read_verdict(read_fd: int, timeout_s: float) -> bool:
    """The child's verdict, or False when it neither answers nor exits within ``timeout_s``.

    ``poll`` rather than ``select`` because file descriptor numbers above 1023 (common in large
    processes) break ``select``. A child that dies without writing closes the pipe, which reads as False.
    """
    poller = select.poll()
    poller.register(read_fd, select.POLLIN)
    if not poller.poll(min(math.ceil(timeout_s * 1000), _MAX_POLL_MS)):
        return False
    return os.read(read_fd, 1) == b"1"


def _kill_and_reap(pid: int) -> None:
    """Stop the child (a no-op if it has exited) and collect it so that no zombie is left.

    Killing before waiting is safe: an exited but unreaped child keeps its pid, so the signal cannot
    reach an unrelated process.
    """
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # already reaped elsewhere (e.g. SIGCHLD set to SIG_IGN)
        pass


def _cap_address_space() -> None:
    """Limit the child's address space to what it inherited plus a headroom (Linux; best effort).

    A huge integer power allocates gigabytes per second; without a cap a few seconds of it could
    exhaust the machine shared with training jobs before the deadline kills the child. The cap is
    relative because the caller may already map a lot (CUDA reserves large virtual ranges).
    """
    try:
        import resource  # POSIX only; this runs only in a forked child

        with open("/proc/self/statm", encoding="ascii") as statm:
            mapped = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = mapped + _CHILD_MEMORY_HEADROOM
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        if soft == resource.RLIM_INFINITY or limit < soft:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass


def _run_spawned(predicted: str, gold: str, rel_tol: float, timeout_s: float) -> bool:
    """The fallback without ``fork``: a ``spawn``ed process, killed at the deadline."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    worker = context.Process(
        target=_spawned_child, args=(sender, predicted, gold, rel_tol, timeout_s), daemon=True
    )
    try:
        worker.start()
    except Exception:  # e.g. inside a daemonic process, which may not have children
        receiver.close()
        logger.warning("could not start a math equivalence check; counting the answer as wrong", exc_info=True)
        return False
    finally:
        sender.close()
    try:
        return bool(receiver.poll(timeout_s) and receiver.recv() is True)
    except (EOFError, OSError):
        return False
    finally:
        receiver.close()
        if worker.is_alive():
            worker.kill()
        worker.join(timeout=1.0)


def _spawned_child(sender: Connection, predicted: str, gold: str, rel_tol: float, timeout_s: float) -> None:
    """Body of the spawned child: send the verdict back through the pipe."""
    sender.send(_symbolic_verdict(predicted, gold, rel_tol, _inner_timeout(timeout_s)))
    sender.close()


def _inner_timeout(timeout_s: float) -> int:
    """math-verify's own (whole-second, signal-based) timeout inside the child.

    The child is single-threaded, so the alarm works there; it is set past the parent's deadline, so it
    only matters if the parent has gone away, and it keeps math-verify from logging that its timeout is off.
    """
    return math.ceil(timeout_s) + 1


def _symbolic_verdict(predicted: str, gold: str, rel_tol: float, inner_timeout: int | None) -> bool:
    """math-verify's judgement, then a numeric comparison when a decimal number is involved.

    Runs only in a child process (or in :func:`_warm_up` on fixed inputs): it may take unbounded time.
    """
    try:
        gold_parsed = _parse(gold, inner_timeout)
        predicted_parsed = _parse(predicted, inner_timeout)
        if not gold_parsed or not predicted_parsed:
            return False
        if math_verify.verify(gold_parsed, predicted_parsed, timeout_seconds=inner_timeout):
            return True
        if _DECIMAL_POINT.search(predicted) or _DECIMAL_POINT.search(gold):
            return _numerically_close(gold_parsed[0], predicted_parsed[0], rel_tol)
        return False
    except Exception:
        return False


def _parse(answer: str, inner_timeout: int | None) -> list[object]:
    """math-verify's parse of ``answer``, delimited so that math-verify reads it whole as LaTeX.

    Boxing gives the answer math-verify's highest extraction priority; an answer with unbalanced braces
    would end the box early, so it is put between ``$`` signs instead.
    """
    delimited = f"\\boxed{{{answer}}}" if _braces_balanced(answer) else f"${answer}$"
    return math_verify.parse(delimited, parsing_timeout=inner_timeout)  # type: ignore[arg-type]  # None: no alarm


def _braces_balanced(text: str) -> bool:
    """Whether every group brace in ``text`` is closed in order (escaped braces do not count)."""
    depth = 0
    for token in _BRACE_TOKEN.finditer(text):
        if token.group() == "{":
            depth += 1
        elif token.group() == "}":
            depth -= 1
            if depth < 0:
                return False
    return depth == 0


def _numerically_close(gold: object, predicted: object, rel_tol: float) -> bool:
    """Whether two parsed answers are constant numbers within ``rel_tol`` of each other.

    This catches what math-verify's fixed 6-decimal rounding misses, e.g. ``0.33333`` against
    ``\\frac{1}{3}``. Only scalar constants qualify: an expression with variables, a set or a tuple does not.
    """
    if not isinstance(gold, sympy.Expr) or not isinstance(predicted, sympy.Expr):
        return False
    if gold.free_symbols or predicted.free_symbols:
        return False
    x, y = complex(sympy.N(gold, 30)), complex(sympy.N(predicted, 30))
    if not all(math.isfinite(part) for part in (x.real, x.imag, y.real, y.imag)):
        return False
    return abs(x - y) <= rel_tol * max(abs(x), abs(y))


@functools.cache
def _warm_up() -> None:
    """Run math-verify once in the caller on fixed, benign inputs.

    A forked child starts from the caller's memory, so whatever the caller has already initialised
    (the LaTeX parser, sympy's lazily imported simplification machinery, compiled extraction patterns)
    the child does not redo: this brings a typical check from about 120 ms to about 20 ms. It is cached
    so that it runs once per process; its only effect is speed. math-verify's own timeouts are off
    here because they use signals, which would fail outside the main thread and cancel any alarm the
    caller has set; these inputs finish in milliseconds. math-verify logs once that its timeout is off.
    """
    for gold, predicted in _WARM_UP_PAIRS:
        _symbolic_verdict(predicted, gold, 1e-4, None)


def _positive(name: str, value: float) -> float:
    """``value`` as a float, or a ValueError saying that ``name`` must be a positive finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def normalize_math_answer(answer: str) -> str:
    """A cheap canonical form for comparing answers by text (SAG votes): the extracted answer, no spaces."""
    return extract_answer(answer).replace(" ", "")


class MathGrader:
    """Rewards 1.0 when the prediction's final answer is equivalent to any gold answer, else 0.0.

    Args:
        rel_tol: relative tolerance of numeric comparisons (see :func:`is_equivalent`).
        timeout_s: time bound of one equivalence check, per gold answer.

    Raises:
        ValueError: when ``rel_tol`` or ``timeout_s`` is not a positive finite number.
    """

    def __init__(self, rel_tol: float = 1e-4, timeout_s: float = 5.0) -> None:
        self.rel_tol = _positive("rel_tol", rel_tol)
        self.timeout_s = _positive("timeout_s", timeout_s)

    def grade(self, prediction: str, task: Task) -> Grade:
        """1.0 if the answer in ``prediction`` matches one of ``task.gold_answers``, else 0.0."""
        predicted = extract_answer(prediction)
        correct = float(
            any(
                _answers_equivalent(predicted, extract_answer(gold), self.rel_tol, self.timeout_s)
                for gold in task.gold_answers
            )
        )
        return Grade(score=correct, metrics={"correct": correct})

    def __repr__(self) -> str:
        return f"MathGrader(rel_tol={self.rel_tol!r}, timeout_s={self.timeout_s!r})"
