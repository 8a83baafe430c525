"""The E2B backend, tested at the SDK boundary.

There is no network (and no E2B account) here, so no test creates a real cloud VM. Each test passes a
stand-in as ``sandbox_factory``: it records what the backend asks of the SDK and answers ``run_code`` with
the SDK's own model classes (``Execution``, ``Logs``, ``Result``, ``ExecutionError``) and exceptions, so
the mapping is checked against the real types. The tracebacks below were captured from a real IPython
kernel (IPython 9, ipykernel 7), colour codes included, since that is what E2B's kernel sends back.
The set-up cell itself is run in a plain Python subprocess to check its semantics.
"""

from __future__ import annotations

import functools
import gc
import subprocess
import sys
import textwrap
from typing import Any

import pytest

e2b_code_interpreter = pytest.importorskip("e2b_code_interpreter")
import httpx  # a dependency of the SDK: only there when the SDK is
from e2b_code_interpreter import (  # the imports below come after the importorskip on purpose
    AuthenticationException,
    Execution,
    ExecutionError,
    Logs,
    Result,
    SandboxNotRunningException,
)
from e2b_code_interpreter.exceptions import (
    format_execution_timeout_error,
    format_request_timeout_error,
)

from agentdistill.envs.tools.sandbox import SandboxLimits, make_sandbox
from agentdistill.envs.tools.sandbox.e2b import (
    DEFAULT_SANDBOX_TIMEOUT_S,
    FINAL_ANSWER_ERROR,
    E2BSandbox,
    SandboxUnavailableError,
    describe_kernel_error,
    setup_cell,
)

ZERO_DIVISION_TRACEBACK = (
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m\x1b[31m"
    "ZeroDivisionError\x1b[39m                         Traceback (most recent call last)\x1b[36mCell\x1b[39m"
    "\x1b[36m \x1b[39m\x1b[32mIn[2]\x1b[39m\x1b[32m, line 2\x1b[39m\n\x1b[32m      1\x1b[39m a = \x1b[32m1\x1b[39m\n"
    "\x1b[32m----> \x1b[39m\x1b[32m2\x1b[39m b = a / \x1b[32m0\x1b[39m\n\x1b[32m      3\x1b[39m print("
    "\x1b[33m'never'\x1b[39m)\n\x1b[31mZeroDivisionError\x1b[39m: division by zero"
)
"""Cell 2 was ``a = 1 / b = a / 0 / print('never')``."""

EARLIER_CELL_TRACEBACK = (
    "\x1b[31m---------------------------------------------------------------------------\x1b[39m\x1b[31m"
    "ZeroDivisionError\x1b[39m                         Traceback (most recent call last)\x1b[36mCell\x1b[39m"
    "\x1b[36m \x1b[39m\x1b[32mIn[4]\x1b[39m\x1b[32m, line 2\x1b[39m\n\x1b[32m      1\x1b[39m y = \x1b[32m2\x1b[39m\n"
    "\x1b[32m----> \x1b[39m\x1b[32m2\x1b[39m f(\x1b[32m0\x1b[39m)\n\x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32m"
    "In[3]\x1b[39m\x1b[32m, line 2\x1b[39m, in \x1b[36mf\x1b[39m\x1b[34m(v)\x1b[39m\n\x1b[32m      1\x1b[39m "
    "\x1b[38;5;28;01mdef\x1b[39;00m f(v):\n\x1b[32m----> \x1b[39m\x1b[32m2\x1b[39m     \x1b[38;5;28;01mreturn"
    "\x1b[39;00m \x1b[32m1\x1b[39m / v\n\x1b[31mZeroDivisionError\x1b[39m: division by zero"
)
"""Cell 4 was ``y = 2 / f(0)``, where ``f`` (dividing by its argument) was defined in cell 3."""

SYNTAX_ERROR_TRACEBACK = (
    "  \x1b[36mCell\x1b[39m\x1b[36m \x1b[39m\x1b[32mIn[5]\x1b[39m\x1b[32m, line 1\x1b[39m\n\x1b[31m    \x1b[39m"
    "\x1b[31mdef broken(:\x1b[39m\n               ^\n\x1b[31mSyntaxError\x1b[39m\x1b[31m:\x1b[39m invalid syntax\n"
)


class FakeRemote:
    """Stands in for one ``e2b_code_interpreter.Sandbox``: answers the set-up cell, then scripted replies."""

    def __init__(self, cloud: FakeCloud, create_kwargs: dict[str, Any]) -> None:
        self.cloud = cloud
        self.create_kwargs = create_kwargs
        self.codes: list[str] = []
        self.timeouts: list[float | None] = []
        self.kill_count = 0

    def run_code(self, code: str, timeout: float | None = None) -> Execution:
        self.codes.append(code)
        self.timeouts.append(timeout)
        reply = self.cloud.setup_reply if len(self.codes) == 1 else self.cloud.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def kill(self) -> bool:
        self.kill_count += 1
        return True


class FakeCloud:
    """Stands in for ``Sandbox.create``: records every VM it 'creates'."""

    def __init__(self) -> None:
        self.created: list[FakeRemote] = []
        self.replies: list[Execution | BaseException] = []
        self.setup_reply: Execution | BaseException = Execution()
        self.create_error: BaseException | None = None

    def create(self, **kwargs: Any) -> FakeRemote:
        if self.create_error is not None:
            raise self.create_error
        remote = FakeRemote(self, kwargs)
        self.created.append(remote)
        return remote


def _value(text: str, *, stdout: list[str] | None = None) -> Execution:
    return Execution(results=[Result(text=text, is_main_result=True)], logs=Logs(stdout=stdout or []))


@pytest.fixture
def cloud() -> FakeCloud:
    return FakeCloud()


@pytest.fixture
def box(cloud: FakeCloud) -> E2BSandbox:
    sandbox = E2BSandbox(api_key="test-key", limits=SandboxLimits(step_timeout_s=1.0), sandbox_factory=cloud.create)
    yield sandbox
    sandbox.close()


def test_the_vm_is_created_on_the_first_run_and_reused(cloud: FakeCloud, box: E2BSandbox) -> None:
    assert cloud.created == [] and box.remote is None and box.isolation == "e2b"
    cloud.replies += [Execution(), _value("42")]

    box.run("x = 41")
    result = box.run("x + 1")

    assert len(cloud.created) == 1
    remote = cloud.created[0]
    assert remote.create_kwargs == {"template": None, "timeout": DEFAULT_SANDBOX_TIMEOUT_S, "api_key": "test-key"}
    assert remote.codes == [setup_cell(None), "x = 41", "x + 1"]
    assert remote.timeouts[1:] == [1.0, 1.0]
    assert result.value == "42" and result.error is None and not result.state_lost


def test_stdout_stderr_and_the_main_result_are_mapped(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.replies.append(
        Execution(
            results=[Result(text="<Figure>", is_main_result=False), Result(text="'done'", is_main_result=True)],
            logs=Logs(stdout=["one\n", "two\n"], stderr=["warning\n"]),
        )
    )
    result = box.run("...")
    assert result.logs == "one\ntwo\nwarning\n"
    assert result.value == "'done'" and result.final_answer is None and result.duration_s >= 0


def test_no_main_result_means_no_value_and_long_output_keeps_head_and_tail(cloud: FakeCloud) -> None:
    box = E2BSandbox(api_key="k", limits=SandboxLimits(output_chars=20), sandbox_factory=cloud.create)
    cloud.replies.append(Execution(results=[Result(text="<Figure>")], logs=Logs(stdout=["a" * 50, "END"])))
    result = box.run("...")
    assert result.value is None
    assert result.logs.startswith("a" * 10) and result.logs.endswith("aaaaaaaEND") and "dropped" in result.logs
    box.close()


def test_an_error_names_the_failing_line_like_the_local_backend(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.replies.append(
        Execution(error=ExecutionError("ZeroDivisionError", "division by zero", ZERO_DIVISION_TRACEBACK))
    )
    result = box.run("a = 1\nb = a / 0\nprint('never')")
    assert result.error == "Code execution failed at line 'b = a / 0' due to: ZeroDivisionError: division by zero"
    assert result.value is None and not result.state_lost and box.remote is cloud.created[0]


def test_error_wording_for_earlier_cells_syntax_errors_and_unknown_lines() -> None:
    assert describe_kernel_error("ZeroDivisionError", "division by zero", EARLIER_CELL_TRACEBACK, "y = 2\nf(0)") == (
        "Code execution failed at line 'f(0)' due to: ZeroDivisionError: division by zero"
    )
    assert (
        describe_kernel_error(
            "SyntaxError", "invalid syntax (1850221797.py, line 1)", SYNTAX_ERROR_TRACEBACK, "def broken(:\n    pass"
        )
        == "Code parsing failed on line 1 ('def broken(:') due to: SyntaxError: invalid syntax"
    )
    assert describe_kernel_error("SyntaxError", "incomplete input (1.py, line 3)", "", "x = (\n") == (
        "Code parsing failed on line 3 ('') due to: SyntaxError: incomplete input"
    )
    assert (
        describe_kernel_error("KeyError", "'k'", "", "d['k']")
        == "Code execution failed at line '?' due to: KeyError: 'k'"
    )


def test_final_answer_is_recovered_from_its_exception(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.replies.append(
        Execution(logs=Logs(stdout=["before\n"]), error=ExecutionError(FINAL_ANSWER_ERROR, "multi\nline 42", "..."))
    )
    result = box.run("print('before')\nfinal_answer('multi\\nline 42')\nprint('after')")
    assert result.is_final and result.final_answer == "multi\nline 42"
    assert result.logs == "before\n" and result.error is None and not result.state_lost


def test_a_timeout_kills_the_vm_and_the_next_run_gets_a_new_one(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.replies += [format_execution_timeout_error(), _value("'fresh'")]
    result = box.run("while True: pass")

    assert result.timed_out and result.state_lost
    assert (
        result.error is not None and "timed out after 1 seconds" in result.error and "state was reset" in result.error
    )
    assert cloud.created[0].kill_count == 1 and box.remote is None

    after = box.run("'fresh'")
    assert len(cloud.created) == 2 and cloud.created[1].codes[0] == setup_cell(None)
    assert after.value == "'fresh'" and not after.state_lost and cloud.created[1].kill_count == 0


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadError("connection reset"),
        SandboxNotRunningException("sandbox was not found"),
        format_request_timeout_error(),
    ],
    ids=["connect", "read", "not-running", "request-timeout"],
)
def test_a_connection_failure_is_reported_and_the_vm_dropped(
    cloud: FakeCloud, box: E2BSandbox, failure: BaseException
) -> None:
    cloud.replies += [failure, _value("1")]
    result = box.run("1")
    assert result.state_lost and not result.timed_out
    assert result.error is not None and type(failure).__name__ in result.error
    assert cloud.created[0].kill_count == 1 and box.remote is None
    assert box.run("1").value == "1" and len(cloud.created) == 2


def test_a_lost_kernel_reports_lost_state_and_replaces_the_vm(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.replies.append(Execution(error=ExecutionError("ContextRestarting", "Context was restarted", "")))
    result = box.run("big = bytearray(10**12)")
    assert result.state_lost and result.error is not None and "kernel" in result.error
    assert cloud.created[0].kill_count == 1 and box.remote is None


def test_a_vm_that_cannot_start_is_reported_not_raised(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.create_error = httpx.ConnectError("no route to host")
    result = box.run("1")
    assert (
        result.error is not None
        and "Could not start the E2B sandbox" in result.error
        and "ConnectError" in result.error
    )
    assert not result.state_lost and box.remote is None


def test_a_failed_set_up_cell_kills_the_vm(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.setup_reply = Execution(error=ExecutionError("RuntimeError", "kernel broken", ""))
    result = box.run("1")
    assert result.error is not None and "set-up cell failed" in result.error
    assert cloud.created[0].kill_count == 1 and box.remote is None


def test_a_rejected_key_raises_at_once(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.create_error = AuthenticationException("401: Unauthorized, please check your credentials.")
    with pytest.raises(SandboxUnavailableError, match="rejected the API key"):
        box.run("1")


def test_reset_and_close_kill_the_vm(cloud: FakeCloud, box: E2BSandbox) -> None:
    cloud.replies += [Execution(), Execution()]
    box.run("x = 1")
    box.reset()
    assert cloud.created[0].kill_count == 1 and box.remote is None

    box.run("x = 2")
    box.close()
    box.close()
    assert len(cloud.created) == 2 and cloud.created[1].kill_count == 1
    assert cloud.created[0].kill_count == 1


def test_a_forgotten_sandbox_kills_its_vm_when_collected(cloud: FakeCloud) -> None:
    cloud.replies.append(Execution())
    box = E2BSandbox(api_key="k", sandbox_factory=cloud.create)
    box.run("x = 1")
    del box
    gc.collect()
    assert cloud.created[0].kill_count == 1


def test_no_api_key_is_a_clear_error_at_construction(cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("E2B_API_KEY", raising=False)
    with pytest.raises(SandboxUnavailableError, match="E2B_API_KEY"):
        E2BSandbox(sandbox_factory=cloud.create)
    assert cloud.created == []


def test_the_key_is_read_from_the_environment_and_kept_out_of_repr(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("E2B_API_KEY", "from-env-secret")
    cloud.replies.append(Execution())
    box = E2BSandbox(template="my-template", sandbox_timeout_s=120, sandbox_factory=cloud.create)
    box.run("pass")
    assert cloud.created[0].create_kwargs == {"template": "my-template", "timeout": 120, "api_key": "from-env-secret"}
    assert "secret" not in repr(box)
    box.close()


def test_parent_side_tools_are_refused_with_the_way_out() -> None:
    with pytest.raises(SandboxUnavailableError) as refused:
        E2BSandbox(tools={"search": lambda query: [], "open_page": lambda url: ""}, api_key="k")
    message = str(refused.value)
    assert "open_page, search" in message and "HTTP" in message and "sandbox='local'" in message


def test_make_sandbox_builds_it_with_the_envs_keywords(cloud: FakeCloud) -> None:
    factory = functools.partial(E2BSandbox, api_key="k", sandbox_factory=cloud.create)
    box = make_sandbox(factory, tools={}, allowed_imports=["math"], limits=SandboxLimits(step_timeout_s=3.0))
    cloud.replies.append(_value("2.0"))
    assert box.run("math.sqrt(4)").value == "2.0"
    assert cloud.created[0].codes[0] == setup_cell(["math"]) and cloud.created[0].timeouts[1] == 3.0
    box.close()


def test_the_default_factory_is_the_sdks_create() -> None:
    from agentdistill.envs.tools.sandbox.e2b import _default_factory

    assert _default_factory() == e2b_code_interpreter.Sandbox.create


_SETUP_PROBE = """
import sys
namespace = {"__name__": "__main__"}
exec(compile(sys.argv[1], "<set-up>", "exec"), namespace)

def cell(code):
    exec(compile(code, "/tmp/ipykernel_1/123456.py", "exec"), namespace)

cell("import json\\nencoded = json.dumps([1])")  # allowed; json's own imports come from library files
try:
    cell("import csv")
except ImportError as error:
    print("blocked:", error)
try:
    cell("try:\\n    final_answer(6 * 7)\\nexcept Exception:\\n    pass")
except BaseException as final:
    print("final:", type(final).__name__, str(final))
"""


def _run_setup_probe(allowed_imports: list[str] | None) -> str:
    completed = subprocess.run(
        [sys.executable, "-I", "-c", textwrap.dedent(_SETUP_PROBE), setup_cell(allowed_imports)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return completed.stdout


def test_the_set_up_cell_defines_final_answer_and_guards_cell_imports_only() -> None:
    output = _run_setup_probe(["json"])
    assert "blocked: Import of 'csv' is not allowed. Allowed modules: json" in output
    assert f"final: {FINAL_ANSWER_ERROR} 42" in output


def test_the_set_up_cell_without_an_allow_list_blocks_nothing() -> None:
    output = _run_setup_probe(None)
    assert "blocked" not in output and f"final: {FINAL_ANSWER_ERROR} 42" in output
