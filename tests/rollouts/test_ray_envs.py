"""The Ray executor on a real two-node Ray cluster on this machine: the same records as the local executor, and
no episode lost or run twice when an actor is killed or a node is lost mid-run.

The cluster (``ray.cluster_utils.Cluster``: a head and one worker node, one CPU each, small object stores, no
dashboard) is started once for the module and shut down by the fixture's finalizer. Node failure is detected in
about a second because the head's health checks are tightened (Ray's default takes ~15 s to declare a node dead).
The tests that check settings and the missing-Ray error need no Ray and run everywhere.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import agentdistill  # noqa: F401 - registers the env ids
from agentdistill.cli import main
from agentdistill.policies.base import Completion, PolicyRequest, SamplingParams
from agentdistill.policies.expert import ExpertPolicy
from agentdistill.rollouts.loop import check_executor, make_rollout_envs, run_rollouts
from agentdistill.rollouts.records import read_trajectories

ENV_ID = "AgentQA-Synthetic-v0"
EPISODES = 24
NODE_LOSS_EPISODES = 200
"""The node-loss run plays 200 tasks: the same ids and scores as the local executor although a node dies mid-run."""
NUM_ENVS = 4
_NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024**2}
_FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


def _expert_rollout_argv(out: Path, episodes: int, *extra: str) -> list[str]:
    """``agentdistill rollout`` of the expert on the test's env into ``out``, plus ``extra`` flags."""
    return ["rollout", "--env", ENV_ID, "--policy", "expert", "--episodes", str(episodes), "--out", str(out), *extra]


# --- settings (no Ray needed) ------------------------------------------------------------------------------


def test_executor_settings_are_checked_in_one_line() -> None:
    with pytest.raises(ValueError, match=r"executor must be one of local, ray, got 'dask'"):
        check_executor("dask")
    with pytest.raises(ValueError, match=r"ray_address 'h:6379' is read only by the ray executor"):
        check_executor("local", "h:6379")
    with pytest.raises(ValueError, match=r"vectorization_mode 'async' is for the local executor"):
        check_executor("ray", None, "async")
    check_executor("ray", "h:6379")


def test_cli_refuses_a_ray_address_without_the_ray_executor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(_expert_rollout_argv(tmp_path / "t.jsonl", 1, "--ray-address", "127.0.0.1:6379"))
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "agentdistill rollout: --ray-address 127.0.0.1:6379 is read only with --executor ray"
    ]


def test_experiment_configs_take_and_check_the_executor(tmp_path: Path) -> None:
    from agentdistill.experiments import ConfigError, load_experiment

    collect = tmp_path / "collect.yaml"
    collect.write_text(
        f"kind: collect\nout: {tmp_path / 'out'}\npolicy: expert\ntasks: [{{env: {ENV_ID}, episodes: 4}}]\n"
        "executor: ray\nray_address: head:6379\n"
    )
    config = load_experiment(collect).config
    assert (config.executor, config.ray_address) == ("ray", "head:6379")
    with pytest.raises(ConfigError, match=r"executor: expected one of 'local', 'ray', got 'dask'"):
        load_experiment(collect, overrides=["executor=dask"])
    evaluation = tmp_path / "eval.yaml"
    evaluation.write_text(f"kind: eval\nout: {tmp_path / 'out'}\npolicy: expert\ntasks: [{ENV_ID}]\nlimit: 2\n")
    with pytest.raises(ConfigError, match=r"ray_address 'head:6379' is read only by the ray executor"):
        load_experiment(evaluation, overrides=["ray_address=head:6379"])
    with pytest.raises(ConfigError, match=r"vectorization_mode 'async' is for the local executor"):
        load_experiment(evaluation, overrides=["executor=ray", "vectorization_mode=async"])


def test_without_ray_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where the extra is not installed
    with pytest.raises(
        ImportError, match=r'the ray executor needs Ray, which is not installed: pip install -e "\.\[ray\]"'
    ):
        make_rollout_envs(ENV_ID, 2, executor="ray")


def test_an_address_nothing_answers_at_is_one_line_in_seconds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray is already connected in this process")
    begun = time.monotonic()
    code = main(_expert_rollout_argv(tmp_path / "t.jsonl", 1, "--executor", "ray", "--ray-address", "127.0.0.1:1"))
    assert code == 1 and time.monotonic() - begun < 30  # ray.init alone retries such an address for minutes
    [line] = capsys.readouterr().err.strip().splitlines()
    assert (
        line.startswith("agentdistill rollout: no Ray cluster answers at '127.0.0.1:1'") and "ray start --head" in line
    )
    assert not ray.is_initialized()


# --- a real cluster ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A head and a worker node on this machine, with this process connected as the driver."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("another Ray is connected in this process")
    started = Cluster(
        initialize_head=True,
        head_node_args={**_NODE, "include_dashboard": False, "_system_config": _FAST_FAILURE_DETECTION},
    )
    try:
        started.add_node(**_NODE)
        started.wait_for_nodes()
        ray.init(address=started.address, log_to_driver=False)
        yield started
    finally:
        ray.shutdown()
        started.shutdown()


class FaultAt:
    """The expert, with ``fault()`` done just before its ``call``-th batch: in the middle of the run, while every
    env holds an episode in progress."""

    def __init__(self, call: int, fault: Callable[[], None]) -> None:
        self.expert, self.call, self.fault, self.name = ExpertPolicy(), call, fault, "expert"
        self.calls = 0

    def generate(self, requests: Sequence[PolicyRequest], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        if self.calls == self.call:
            self.fault()
        return self.expert.generate(requests, params)

    def close(self) -> None:
        pass


def _until_dead(actor: Any, timeout_s: float = 30.0) -> None:
    """Wait until Ray reports ``actor`` dead, so that the run goes on only once the fault is real (a worker
    process outlives its killed raylet for a moment and would still answer)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return
        except ray.exceptions.GetTimeoutError:
            continue
        time.sleep(0.1)
    raise AssertionError(f"the actor was still alive {timeout_s} s after the fault")


def _rollout(
    out: Path,
    executor: str,
    policy: Any = None,
    on_envs: Callable[[Any], None] | None = None,
    episodes: int = EPISODES,
) -> Any:
    envs = make_rollout_envs(ENV_ID, NUM_ENVS, executor=executor)
    try:
        if on_envs is not None:
            on_envs(envs)
        run_rollouts(
            envs, policy or ExpertPolicy(), env_id=ENV_ID, task_indices=range(episodes), out=str(out), progress=False
        )
        return envs
    finally:
        envs.close()


def _episodes(path: Path) -> list[tuple[int, str, float, list[dict[str, str]]]]:
    """Each record's task, score and messages, in task order; every task once."""
    records = sorted(read_trajectories(path), key=lambda record: record["task_index"])
    return [(r["task_index"], r["task_id"], r["score"], r["messages"]) for r in records]


@pytest.fixture(scope="module")
def local_episodes(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, str, float, list[dict[str, str]]]]:
    """The local executor's episodes of tasks 0 to 199 (tests of fewer tasks compare with the first ones)."""
    path = tmp_path_factory.mktemp("local") / "local.jsonl"
    _rollout(path, "local", episodes=NODE_LOSS_EPISODES)
    episodes = _episodes(path)
    assert [index for index, *_ in episodes] == list(range(NODE_LOSS_EPISODES))
    assert all(score == 1.0 for _, _, score, _ in episodes)
    return episodes


def test_ray_executor_writes_the_records_of_the_local_one(cluster: Any, local_episodes: list, tmp_path: Path) -> None:
    envs = _rollout(tmp_path / "ray.jsonl", "ray")
    assert len(set(envs.shard_nodes)) == 2, "the shards should run on both nodes"
    assert envs.restarts == 0
    assert _episodes(tmp_path / "ray.jsonl") == local_episodes[:EPISODES]


def test_cli_rollout_with_the_ray_executor(cluster: Any, local_episodes: list, tmp_path: Path) -> None:
    out = tmp_path / "cli.jsonl"
    code = main(
        _expert_rollout_argv(
            out, EPISODES, "--num-envs", str(NUM_ENVS), "--executor", "ray", "--ray-address", cluster.address,
            "--no-progress",
        )
    )
    assert code == 0
    assert _episodes(out) == local_episodes[:EPISODES]


def test_an_env_error_inside_an_actor_is_raised_as_the_env_raised_it(cluster: Any) -> None:
    envs = make_rollout_envs(ENV_ID, 2, executor="ray")
    try:
        with pytest.raises(ValueError, match="task_index"):
            envs.reset(options={"task_index": -1})
    finally:
        envs.close()


def test_a_killed_actor_loses_and_doubles_no_episode(cluster: Any, local_episodes: list, tmp_path: Path) -> None:
    holder: dict[str, Any] = {}

    def kill_first_actor() -> None:
        envs = holder["envs"]
        os.kill(envs.shard_pids[0], signal.SIGKILL)  # as the OOM killer would
        _until_dead(envs.actors[0])

    policy = FaultAt(10, kill_first_actor)
    envs = _rollout(tmp_path / "killed.jsonl", "ray", policy, on_envs=lambda built: holder.update(envs=built))
    assert envs.restarts == 1
    assert _episodes(tmp_path / "killed.jsonl") == local_episodes[:EPISODES]


def test_an_episode_that_replays_differently_stops_the_run(cluster: Any) -> None:
    from agentdistill.rollouts.loop import IDLE_ACTION
    from agentdistill.rollouts.ray_envs import RayVectorEnv, ReplayDivergedError

    envs = RayVectorEnv(ENV_ID, 2, num_actors=1)
    try:
        envs.reset(options={"task_index": 0})
        envs.step((IDLE_ACTION, IDLE_ACTION))
        envs._journals[1].observations[-1] = "what a non-deterministic env showed the first time"
        os.kill(envs.shard_pids[0], signal.SIGKILL)
        _until_dead(envs.actors[0])
        with pytest.raises(ReplayDivergedError, match=r"env 1 did not replay its episode .* after step 1 differs"):
            envs.step((IDLE_ACTION, IDLE_ACTION))
    finally:
        envs.close()


def test_a_lost_node_loses_and_doubles_no_episode(cluster: Any, local_episodes: list, tmp_path: Path) -> None:
    worker = next(iter(cluster.worker_nodes))
    holder: dict[str, Any] = {}

    def on_envs(envs: Any) -> None:
        assert worker.node_id in envs.shard_nodes, "a shard should run on the worker node"
        holder["envs"] = envs

    def lose_worker() -> None:
        envs = holder["envs"]
        cluster.remove_node(worker, allow_graceful=False)  # its raylet killed: the node is gone
        _until_dead(envs.actors[envs.shard_nodes.index(worker.node_id)])

    policy = FaultAt(60, lose_worker)
    try:
        envs = _rollout(tmp_path / "lost.jsonl", "ray", policy, on_envs=on_envs, episodes=NODE_LOSS_EPISODES)
        assert envs.restarts >= 1 and worker.node_id not in envs.shard_nodes
        assert _episodes(tmp_path / "lost.jsonl") == local_episodes
    finally:
        if worker in cluster.worker_nodes:
            cluster.remove_node(worker)
        cluster.add_node(**_NODE)  # the next test gets two nodes again
        cluster.wait_for_nodes()
