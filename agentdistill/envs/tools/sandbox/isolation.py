"""Linux isolation for the sandbox: namespaces, a private /tmp, an unprivileged user.

Runs inside the sandbox's processes (standard library only, loaded by ``zygote.py`` from this file)
before any model code. With root (as in CI and most containers):

1. the zygote ``unshare``s new network, mount, IPC and UTS namespaces once: no network at all (not even
   the host's loopback) for it and every episode it forks;
2. each episode process unshares a PID and a mount namespace of its own, puts fresh size-limited tmpfs
   over ``/tmp``, ``/var/tmp`` and ``/dev/shm`` and binds its work directory back in, so scratch
   writes never reach the host or the next episode;
3. it forks: the child is PID 1 of the episode's PID namespace, so when it dies the kernel kills every
   process model code started, even one that left the process group; the outer process only waits
   and passes the child's exit status on;
4. the child mounts a /proc that shows only the namespace, hands the work directory to a user id
   of its episode (unique while the episode lives: a base plus the episode process's pid), and drops to that user, so
   writes outside the work directory are refused by plain file permissions, other processes (the env
   included) cannot be signalled or inspected, and ``RLIMIT_NPROC`` counts this worker's processes only.
   It keeps one capability, ``CAP_DAC_READ_SEARCH`` (read any file), because the interpreter and its
   packages often live where only root can read (``/root/.pyenv``); reading is not contained, writing
   is. ``no_new_privs`` stops setuid programs from giving anything back, and the capability is not
   passed on to programs model code executes.

Without root, or where the kernel refuses, nothing is changed and the caller reports the weaker level.
"""

from __future__ import annotations

import ctypes
import os
import signal
from typing import NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_SET_NO_NEW_PRIVS = 38
CAP_DAC_READ_SEARCH = 2
_CAPABILITY_VERSION_3 = 0x20080522

SANDBOX_UID_BASE = 1_000_000_000
"""User ids of episodes start here, far from real accounts; the episode process's pid is added."""

SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
NAMESPACES = "namespaces"
PROCESS_ONLY = "process"


class IsolationError(OSError):
    """A step of the isolation set-up failed; the message names the step."""


def isolate_zygote() -> str:
    """In the zygote, once: new network, mount, IPC and UTS namespaces, with private mounts.

    Returns :data:`NAMESPACES`, or :data:`PROCESS_ONLY` when not root. Raises :class:`IsolationError`
    when the kernel refuses (the zygote then reports the weaker level).
    """
    if os.geteuid() != 0:
        return PROCESS_ONLY
    libc = _libc()
    _check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    return NAMESPACES


def enter_episode(workdir: str, *, level: str, uid: int, scratch_bytes: int) -> None:
    """In a process the zygote just forked: become the isolated home of one episode.

    With :data:`NAMESPACES`, this process unshares a PID and a mount namespace, mounts fresh tmpfs
    scratch space, binds ``workdir`` back in and forks; the outer process then only waits and ends
    like its child (it never returns), and the child, PID 1 of the episode, mounts its own /proc and
    drops to ``uid``. With :data:`PROCESS_ONLY`, it only starts a new session and enters ``workdir``.
    Either way the episode dies with its parent.
    """
    libc = _libc()
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "die with the zygote")
    os.setsid()
    if level != NAMESPACES:
        os.chdir(workdir)
        return
    _check(libc.unshare(CLONE_NEWPID | CLONE_NEWNS), "unshare the episode")
    workdir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    for scratch in SCRATCH_DIRS:
        if os.path.isdir(scratch):
            options = f"size={scratch_bytes},mode=1777".encode()
            _check(libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"tmpfs on {scratch}")
    os.makedirs(workdir, exist_ok=True)
    _check(libc.mount(f"/proc/self/fd/{workdir_fd}".encode(), workdir.encode(), None, MS_BIND, None), "bind workdir")
    os.close(workdir_fd)
    child = os.fork()
    if child:
        _wait_and_exit_like(child)
    _check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    os.chown(workdir, uid, uid)
    os.chdir(workdir)
    _become_unprivileged(libc, uid)
    # armed last: a change of user id clears the parent-death signal
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "die with the outer process")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


class _CapabilityHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapabilityData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _become_unprivileged(libc: ctypes.CDLL, uid: int) -> None:
    """Switch to ``uid`` keeping only ``CAP_DAC_READ_SEARCH``, and forbid regaining privileges."""
    _check(libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "keep capabilities across setuid")
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    header = _CapabilityHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapabilityData * 2)()
    data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
    _check(libc.capset(ctypes.byref(header), data), "drop capabilities")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def _check(result: int, step: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise IsolationError(errno, f"sandbox isolation failed at '{step}': {os.strerror(errno)}")


def _wait_and_exit_like(child: int) -> NoReturn:
    """In the outer process: wait for the namespace's init and end the same way it did."""
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number not in (signal.SIGKILL, signal.SIGSTOP):  # these two cannot be handled: setting one raises
            signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
