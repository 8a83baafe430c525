"""Envs as Ray actors behind one ``gymnasium.vector.VectorEnv``: the rollout loop, unchanged, on a cluster.

:class:`RayVectorEnv` is what :func:`~agentdistill.rollouts.loop.make_rollout_envs` builds for
``executor="ray"``. The ``num_envs`` envs are cut into contiguous shards; each shard is one Ray actor
(:class:`EnvShard`) that makes its envs with ``gym.make(env_id, **env_kwargs)`` in its own process, their
sandboxes sharing zygotes as in a local sync vector env. The vector env speaks exactly the protocol
:func:`~agentdistill.rollouts.loop.run_rollouts` uses (``reset`` with a ``reset_mask`` and per-task
``options``, ``step`` of every env, ``call``/``get_attr``, ``autoreset_mode=DISABLED``) and batches
observations and infos as gymnasium's ``SyncVectorEnv`` does, so the loop cannot tell the two apart and the
records it writes are the same.

Placement. Shard ``k`` is pinned to the ``k``-th live node with CPUs (round robin, soft node affinity). Ray's
``SPREAD`` strategy is only a preference: on a two-node cluster here it put both actors on one node, in two
runs out of two. A soft affinity still lands on another node when the chosen one is gone. Actors reserve no
CPU while they run (Ray's default for actors): their work is done by the sandbox processes they start, which
Ray does not account for, so reserving CPUs would only cap the number of shards.

Faults: replay, not re-run. An actor that dies (its process killed, its node lost: ``RayActorError``,
``ObjectLostError``) takes the state of its envs with it. The vector env keeps, per env, what it did since its
last reset (the reset's seed and options, the actions, the observations); it starts a fresh actor for the shard
on a live node (never the one it was lost on, while another is up), resets each of its envs with the same
options and steps it with the same actions, checks that every observation is the one recorded, and then sends
the call that failed again. The loop only sees that call take longer: no episode is lost, and none is run
twice, because the loop, not the env, decides what to record (one line per finished episode, written by the
driver). The alternative, telling the loop that an episode failed so that it runs it again, would change the
loop and its records (a failed episode is a line today) for every executor.

Why replay is safe. The envs are deterministic given the task and the actions: a task index picks the task
(the synthetic envs generate it from the index), and the code of each action runs in a sandbox that the fresh
env starts from scratch, so whatever the code did (files, variables, processes) happens again only inside that
new sandbox; the lost sandbox died with its actor (its zygote exits when its parent's socket closes). What is
not replayed is the outside world: a tool that changes something outside the env (none of ours does;
``web_search`` only reads) would see the episode's calls twice. An env whose observations differ on replay (a
timed-out step that finishes this time, a tool that answers differently) cannot be restored: the vector env
raises :class:`ReplayDivergedError` rather than let the loop record an episode whose messages and score come
from two different runs; the trajectory file keeps every finished episode, and running the same command again
finishes the rest.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

RAY_EXTRA = 'pip install -e ".[ray]"'
"""How to install Ray with this package (the optional extra ``ray``)."""

MAX_ATTEMPTS = 3
"""How many times in a row one shard may be lost during one call before the vector env gives up."""

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT_S = 30.0
_CONNECT_TIMEOUT_S = 5.0


class ReplayDivergedError(RuntimeError):
    """An env rebuilt on a fresh actor did not reproduce its episode: its observations differ from the ones the
    loop already saw, so the episode cannot go on where it was."""


class ShardLostError(RuntimeError):
    """A shard's actor was lost :data:`MAX_ATTEMPTS` times in a row: the cluster cannot keep it alive."""


def import_ray() -> ModuleType:
    """The ``ray`` module, or an ``ImportError`` whose one line says how to install it."""
    try:
        import ray
    except ModuleNotFoundError as error:
        raise ImportError(f"the ray executor needs Ray, which is not installed: {RAY_EXTRA}") from error
    return ray


class EnvShard:
    """``count`` envs in one process: the body of one Ray actor.

    A plain class, wrapped with ``ray.remote`` only when a :class:`RayVectorEnv` starts it, so that this module
    imports without Ray. The envs are made by :meth:`open`, not ``__init__``: an env that cannot be built (a bad
    argument) then fails a method call, whose error Ray hands back as the env's own exception, instead of
    killing the actor's creation, which Ray reports as a dead actor.
    """

    def __init__(self, env_id: str, count: int, env_kwargs: Mapping[str, Any]) -> None:
        self.env_id = env_id
        self.count = count
        self.env_kwargs = dict(env_kwargs)
        self.envs: list[gym.Env] = []

    def open(self) -> dict[str, Any]:
        """Make the envs; return what the vector env needs to know about them and where they run."""
        import ray

        import agentdistill  # noqa: F401 - registers the env ids in this process
        from agentdistill.envs.tools.sandbox import SharedLocalSandboxes

        kwargs = dict(self.env_kwargs)
        if "sandbox" not in kwargs:
            kwargs["sandbox"] = SharedLocalSandboxes()  # one zygote per setting for the whole shard
        try:
            while len(self.envs) < self.count:
                self.envs.append(gym.make(self.env_id, **kwargs))
        except BaseException:
            self.close()
            raise
        first = self.envs[0]
        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "metadata": dict(first.metadata),
            "render_mode": first.render_mode,
            "observation_space": first.observation_space,
            "action_space": first.action_space,
        }

    def reset(
        self, indices: Sequence[int], seeds: Sequence[int | None], options: Mapping[str, Any] | None
    ) -> list[tuple[Any, dict[str, Any]]]:
        """Reset the envs at ``indices`` (positions in this shard)."""
        return [
            self.envs[i].reset(seed=seed, options=dict(options) if options else None)
            for i, seed in zip(indices, seeds, strict=True)
        ]

    def step(self, actions: Sequence[Any]) -> list[tuple[Any, float, bool, bool, dict[str, Any]]]:
        """Step every env of the shard with its action."""
        return [env.step(action) for env, action in zip(self.envs, actions, strict=True)]

    def replay(
        self, index: int, seed: int | None, options: Mapping[str, Any] | None, actions: Sequence[Any]
    ) -> list[Any]:
        """Reset env ``index`` as it was last reset and step it with ``actions``: the observations, in order."""
        observation, _ = self.envs[index].reset(seed=seed, options=dict(options) if options else None)
        observations = [observation]
        for action in actions:
            observations.append(self.envs[index].step(action)[0])
        return observations

    def call(self, name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> list[Any]:
        """``name`` of every env: called with the arguments when it is a method, else read."""
        results = []
        for env in self.envs:
            attribute = env.get_wrapper_attr(name)
            results.append(attribute(*args, **kwargs) if callable(attribute) else attribute)
        return results

    def set_attr(self, name: str, values: Sequence[Any]) -> None:
        for env, value in zip(self.envs, values, strict=True):
            env.set_wrapper_attr(name, value)

    def close(self) -> None:
        envs, self.envs = self.envs, []
        for env in envs:
            env.close()


@dataclass
class _Journal:
    """What one env did since its last reset: enough to rebuild it on a fresh actor and to check the rebuild."""

    seed: int | None
    options: dict[str, Any] | None
    observations: list[Any]
    actions: list[Any] = field(default_factory=list)


@dataclass
class _Shard:
    """One actor and the envs it holds (their positions in the vector env)."""

    envs: range
    actor: Any = None
    node_id: str | None = None
    pid: int | None = None
    restarts: int = 0


class RayVectorEnv(VectorEnv):
    """``num_envs`` envs of ``env_id`` in Ray actors, stepped as one vector env (see the module docstring).

    Args:
        env_id: a registered env id (``agentdistill`` registers its envs in every actor).
        num_envs: envs stepped together.
        env_kwargs: constructor arguments of every env; they travel to the actors, so they must pickle.
        ray_address: the cluster to join (``HOST:PORT`` of its head, ``auto``, ``ray://...``); ``None`` joins the
            one ``RAY_ADDRESS`` names or else starts a Ray of its own on this machine. A driver already connected
            (``ray.init`` called before) is used as it is.
        num_actors: shards (one actor each); default: one per CPU of the cluster, at most one per env, so that
            steps run in parallel up to the cluster's CPUs.
        actor_options: more options for every actor (Ray's ``.options``: ``resources``, ``runtime_env``, ...);
            a ``scheduling_strategy`` given here replaces the round-robin node placement.

    The vector env never resets an env by itself (``autoreset_mode`` is ``DISABLED``, what the rollout loop
    needs), and it shuts down the Ray it connected to or started when it is closed.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        *,
        env_kwargs: Mapping[str, Any] | None = None,
        ray_address: str | None = None,
        num_actors: int | None = None,
        actor_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        if num_actors is not None and (
            isinstance(num_actors, bool) or not isinstance(num_actors, int) or num_actors < 1
        ):
            raise ValueError(f"num_actors must be a positive int or None, got {num_actors!r}")
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.num_envs = num_envs
        self._actor_options = dict(actor_options or {})
        self._journals: list[_Journal | None] = [None] * num_envs
        self._attributes: list[dict[str, Any]] = [{} for _ in range(num_envs)]
        self._shards: list[_Shard] = []
        self._ray = import_ray()
        self._owns_ray = _connect(self._ray, ray_address)
        try:
            self._remote_shard = self._ray.remote(EnvShard)
            actors = num_actors or max(1, int(self._ray.cluster_resources().get("CPU", 1)))
            per_shard = math.ceil(num_envs / min(actors, num_envs))
            self._shards = [
                _Shard(range(start, min(start + per_shard, num_envs))) for start in range(0, num_envs, per_shard)
            ]
            described = self._start_all()
        except BaseException:
            self.close_extras()
            raise
        first = described[0]
        self.metadata = {**first["metadata"], "autoreset_mode": AutoresetMode.DISABLED}
        self.render_mode = first["render_mode"]
        self.single_observation_space = first["observation_space"]
        self.single_action_space = first["action_space"]
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._env_obs: list[Any] = [None] * num_envs
        self._observations = create_empty_array(self.single_observation_space, n=num_envs, fn=np.zeros)

    # --- what the loop calls ---------------------------------------------------------------------------

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset the envs ``options["reset_mask"]`` selects (all without one), each with ``options`` less the mask;
        seeds as ``SyncVectorEnv`` takes them. Other envs keep their last observation."""
        seeds = _seeds(seed, self.num_envs)
        options = dict(options) if options is not None else None
        mask = np.ones(self.num_envs, dtype=np.bool_)
        if options is not None and "reset_mask" in options:
            mask = _check_mask(options.pop("reset_mask"), self.num_envs)
        chosen = {number: [i for i in shard.envs if mask[i]] for number, shard in enumerate(self._shards)}
        chosen = {number: envs for number, envs in chosen.items() if envs}
        results = self._on_shards(
            {
                number: _bound(
                    "reset", [i - self._shards[number].envs.start for i in envs], [seeds[i] for i in envs], options
                )
                for number, envs in chosen.items()
            }
        )
        infos: dict[str, Any] = {}
        for number, envs in chosen.items():
            for i, (observation, info) in zip(envs, results[number], strict=True):
                self._journals[i] = _Journal(seed=seeds[i], options=options, observations=[observation])
                self._env_obs[i] = observation
                infos = self._add_info(infos, info, i)
        return self._batched_observations(), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every env with its action, all shards at once."""
        per_env = list(iterate(self.action_space, actions))
        if len(per_env) != self.num_envs:
            raise ValueError(f"step needs one action per env ({self.num_envs}), got {len(per_env)}")
        results = self._on_shards(
            {number: _bound("step", [per_env[i] for i in shard.envs]) for number, shard in enumerate(self._shards)}
        )
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=np.bool_)
        truncated = np.zeros(self.num_envs, dtype=np.bool_)
        infos: dict[str, Any] = {}
        for number, shard in enumerate(self._shards):
            for i, (observation, reward, done, cut, info) in zip(shard.envs, results[number], strict=True):
                journal = self._journals[i]
                if journal is not None:
                    journal.actions.append(per_env[i])
                    journal.observations.append(observation)
                self._env_obs[i] = observation
                rewards[i], terminated[i], truncated[i] = reward, done, cut
                infos = self._add_info(infos, info, i)
        return self._batched_observations(), rewards, terminated, truncated, infos

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """``name`` of every env, in env order (a method is called with the arguments)."""
        results = self._on_shards({number: _bound("call", name, args, kwargs) for number in range(len(self._shards))})
        return tuple(value for number in range(len(self._shards)) for value in results[number])

    def get_attr(self, name: str) -> tuple[Any, ...]:
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set ``name`` on every env (one value each, or one for all); a rebuilt shard gets the values again."""
        if not isinstance(values, (list, tuple)):
            values = [values] * self.num_envs
        if len(values) != self.num_envs:
            raise ValueError(f"set_attr needs one value per env ({self.num_envs}), got {len(values)}")
        for i, value in enumerate(values):
            self._attributes[i][name] = value
        self._on_shards(
            {
                number: _bound("set_attr", name, [values[i] for i in shard.envs])
                for number, shard in enumerate(self._shards)
            }
        )

    def close_extras(self, **kwargs: Any) -> None:
        """Close every shard's envs (their sandboxes stop with them), end the actors, and leave the Ray this env
        connected to or started."""
        ray = self._ray
        closing = [shard.actor.close.remote() for shard in self._shards if shard.actor is not None]
        if closing:
            ray.wait(closing, num_returns=len(closing), timeout=_CLOSE_TIMEOUT_S)
        for shard in self._shards:
            _kill(ray, shard.actor)
            shard.actor = None
        if self._owns_ray:
            ray.shutdown()

    # --- what tests and monitoring read ----------------------------------------------------------------

    @property
    def actors(self) -> tuple[Any, ...]:
        """The actor handle of each shard, in env order (for fault-injection tests and monitoring)."""
        return tuple(shard.actor for shard in self._shards)

    @property
    def shard_nodes(self) -> tuple[str | None, ...]:
        """The Ray node id each shard's actor runs on."""
        return tuple(shard.node_id for shard in self._shards)

    @property
    def shard_pids(self) -> tuple[int | None, ...]:
        """The process id of each shard's actor, on its node."""
        return tuple(shard.pid for shard in self._shards)

    @property
    def restarts(self) -> int:
        """How many times a lost shard was rebuilt on a fresh actor."""
        return sum(shard.restarts for shard in self._shards)

    def __repr__(self) -> str:
        return f"RayVectorEnv({self.env_id}, num_envs={self.num_envs}, actors={len(self._shards)})"

    # --- shards ------------------------------------------------------------------------------------------

    def _batched_observations(self) -> Any:
        self._observations = concatenate(self.single_observation_space, self._env_obs, self._observations)
        return deepcopy(self._observations)

    def _start_all(self) -> list[dict[str, Any]]:
        """Start every shard's actor and make its envs; what the first shard says about its envs."""
        nodes = _live_nodes(self._ray)
        for number, shard in enumerate(self._shards):
            self._spawn(shard, nodes[number % len(nodes)] if nodes else None)
        described = self._on_shards({number: _bound("open") for number in range(len(self._shards))})
        for number, shard in enumerate(self._shards):
            shard.node_id, shard.pid = described[number]["node_id"], described[number]["pid"]
        return [described[number] for number in range(len(self._shards))]

    def _spawn(self, shard: _Shard, node_id: str | None) -> None:
        """Start the actor of ``shard`` (its envs are made by ``open``), pinned softly to ``node_id``."""
        options: dict[str, Any] = {"max_restarts": 0, "max_task_retries": 0}
        if node_id is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=True)
        options.update(self._actor_options)
        shard.actor = self._remote_shard.options(**options).remote(self.env_id, len(shard.envs), self.env_kwargs)
        shard.node_id = shard.pid = None

    def _on_shards(self, calls: Mapping[int, Callable[[Any], Any]]) -> dict[int, Any]:
        """Run one call per shard (``calls[shard](actor)`` returns its object ref), all at once; a shard whose actor
        is lost is rebuilt (:meth:`_rebuild`) and its call sent again, up to :data:`MAX_ATTEMPTS` times. (``open``
        may be sent again too: it makes only the envs a shard lacks.)

        An exception the env itself raised is raised here as it was (Ray's wrapper is its ``__cause__``)."""
        ray = self._ray
        lost = _lost_actor_errors(ray)
        results: dict[int, Any] = {}
        pending = dict(calls)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            refs = {number: call(self._shards[number].actor) for number, call in pending.items()}
            failures: dict[int, BaseException] = {}
            for number, ref in refs.items():
                try:
                    results[number] = ray.get(ref)
                except ray.exceptions.RayTaskError as error:
                    raise _cause(error) from error
                except lost as error:
                    failures[number] = error
            if not failures:
                return results
            for number, error in failures.items():
                envs = self._shards[number].envs
                if attempt == MAX_ATTEMPTS:
                    raise ShardLostError(
                        f"env shard {number} (envs {envs.start}..{envs.stop - 1}) was lost {MAX_ATTEMPTS} times in a "
                        f"row: {_first_line(error)}"
                    ) from error
                logger.warning(
                    "env shard %d (envs %d..%d) lost its actor (%s); replaying its episodes on a fresh one",
                    number,
                    envs.start,
                    envs.stop - 1,
                    _first_line(error),
                )
                self._rebuild(number)
            pending = {number: calls[number] for number in failures}
        raise AssertionError("unreachable")  # pragma: no cover

    def _rebuild(self, number: int) -> None:
        """A fresh actor for shard ``number``, its envs brought back to where the lost ones were (see the module
        docstring): set attributes again, then replay each env's episode and check its observations."""
        ray = self._ray
        lost = _lost_actor_errors(ray)
        shard = self._shards[number]
        lost_on: set[str | None] = set()
        for attempt in range(1, MAX_ATTEMPTS + 1):
            lost_on.add(shard.node_id)
            _kill(ray, shard.actor)
            nodes = _live_nodes(ray, exclude=lost_on)
            self._spawn(shard, nodes[(number + shard.restarts) % len(nodes)] if nodes else None)
            shard.restarts += 1
            try:
                self._restore(shard)
                return
            except lost as error:
                if attempt == MAX_ATTEMPTS:
                    raise ShardLostError(
                        f"env shard {number} could not be rebuilt in {MAX_ATTEMPTS} tries: {_first_line(error)}"
                    ) from error

    def _restore(self, shard: _Shard) -> None:
        ray = self._ray
        try:
            described = ray.get(shard.actor.open.remote())
            shard.node_id, shard.pid = described["node_id"], described["pid"]
            for name in {name for i in shard.envs for name in self._attributes[i]}:
                values = [self._attributes[i].get(name) for i in shard.envs]
                ray.get(shard.actor.set_attr.remote(name, values))
            replays = {
                i: shard.actor.replay.remote(i - shard.envs.start, journal.seed, journal.options, journal.actions)
                for i in shard.envs
                if (journal := self._journals[i]) is not None
            }
            for i, ref in replays.items():
                journal = self._journals[i]
                assert journal is not None
                _check_replay(i, journal, ray.get(ref))
        except ray.exceptions.RayTaskError as error:
            raise _cause(error) from error


def _check_replay(index: int, journal: _Journal, observations: list[Any]) -> None:
    for step, (seen, again) in enumerate(zip(journal.observations, observations, strict=True)):
        if not _same(seen, again):
            where = "its reset" if step == 0 else f"step {step}"
            raise ReplayDivergedError(
                f"env {index} did not replay its episode (options {journal.options!r}) on a fresh actor: the "
                f"observation after {where} differs, so the env is not deterministic and the episode cannot be "
                "restored; run the same command again to finish the remaining episodes (finished ones are kept)"
            )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def _bound(method: str, *args: Any) -> Callable[[Any], Any]:
    """A call of ``method`` with ``args`` on whichever actor a shard has when it is sent (again)."""
    return lambda actor: getattr(actor, method).remote(*args)


def _seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """Seeds per env as ``SyncVectorEnv`` reads them: none, ``seed + i``, or one each."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, int):
        return [seed + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"reset needs one seed per env ({num_envs}) when given a list, got {len(seeds)}")
    return seeds


def _check_mask(mask: Any, num_envs: int) -> np.ndarray:
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise ValueError(f"options['reset_mask'] must be a bool numpy array of shape ({num_envs},), got {mask!r}")
    if not mask.any():
        raise ValueError("options['reset_mask'] selects no env: set at least one True")
    return mask


def _cause(error: BaseException) -> BaseException:
    """The exception an env raised inside an actor, as it was raised there (Ray's wrapper otherwise)."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _lost_actor_errors(ray: ModuleType) -> tuple[type[BaseException], ...]:
    """What Ray raises when an actor or its node is gone (as opposed to an error the env raised)."""
    return (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError, ray.exceptions.NodeDiedError)


def _kill(ray: ModuleType, actor: Any) -> None:
    """End ``actor`` if it is still there (a half-lost actor must not step its envs behind our back)."""
    if actor is None:
        return
    with contextlib.suppress(Exception):  # an actor already gone with its node cannot be killed twice
        ray.kill(actor, no_restart=True)


def _live_nodes(ray: ModuleType, exclude: Collection[str | None] = ()) -> list[str]:
    """Ids of the live nodes with CPUs, in a fixed order; without ``exclude`` when that leaves none."""
    nodes = sorted(
        node["NodeID"] for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU", 0) > 0
    )
    others = [node for node in nodes if node not in exclude]
    return others or nodes


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Join the cluster at ``address`` (see :class:`RayVectorEnv`); whether this call connected, so that the
    vector env that connected is the one that disconnects."""
    if ray.is_initialized():
        return False
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # "local": a Ray of our own, never the last cluster `ray start` left a note of (a stale one hangs ray.init)
        ray.init(address="local", include_dashboard=False)
        return True
    if address is not None:
        _check_reachable(address)
    ray.init(address=address)
    return True


def _check_reachable(address: str) -> None:
    """Refuse a ``HOST:PORT`` that nothing answers at, in seconds: ``ray.init`` would retry it for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # ``auto``, ``local``, ``ray://``: Ray's own forms, checked by Ray
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ConnectionError(
            f"no Ray cluster answers at {address!r} ({error.strerror or error}): start one there with "
            "`ray start --head --port PORT`, or give --ray-address the head's HOST:PORT"
        ) from None
