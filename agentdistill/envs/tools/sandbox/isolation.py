"""Linux isolation for the sandbox worker: namespaces, a private /tmp, an unprivileged user.

Runs inside the worker process (standard library only, loaded by ``worker.py`` from this file) before
any model code. With root (as in CI and most containers) the worker:

1. ``unshare``s new network, mount, PID, IPC and UTS namespaces: no network at all (not even the host's
   loopback), no view of the host's processes;
2. makes its mounts private and puts fresh size-limited tmpfs over ``/tmp``, ``/var/tmp`` and
   ``/dev/shm``, then binds its own work directory back in, so scratch writes never reach the host;
3. forks: the child is PID 1 of the new PID namespace, so when it dies the kernel kills every process
   model code started, even one that left the process group; the outer process only waits and passes
   the child's exit status on;
4. in the child, mounts a /proc that shows only the namespace, hands the work directory to a user id
   of its own (unique while the worker lives: a base plus the outer pid), and drops to that user, so
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
"""User ids of sandboxes start here, far from real accounts; the outer worker pid is added."""

SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm")
NAMESPACES = "namespaces"
PROCESS_ONLY = "process"


class IsolationError(OSError):
    """A step of the isolation set-up failed; the message names the step."""


def isolate(workdir: str, *, scratch_bytes: int) -> str:
    """Isolate this process as described in the module docstring; returns the level reached.

    Returns :data:`NAMESPACES` in the (forked) child that goes on to run model code, or
    :data:`PROCESS_ONLY` when not root. Raises :class:`IsolationError` if a step fails part-way; the
    outer process never returns (it exits with the child's status).
    """
    if os.geteuid() != 0:
        return PROCESS_ONLY
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    _check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "make mounts private")
    workdir_fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    for scratch in SCRATCH_DIRS:
        if os.path.isdir(scratch):
            options = f"size={scratch_bytes},mode=1777".encode()
            _check(libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options), f"tmpfs on {scratch}")
    os.makedirs(workdir, exist_ok=True)
    _check(libc.mount(f"/proc/self/fd/{workdir_fd}".encode(), workdir.encode(), None, MS_BIND, None), "bind workdir")
    os.close(workdir_fd)
    uid = SANDBOX_UID_BASE + os.getpid()
    child = os.fork()
    if child:
        _wait_and_exit_like(child)
    _check(libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
    os.chown(workdir, uid, uid)
    os.chdir(workdir)
    _become_unprivileged(libc, uid)
    # armed last: a change of user id clears the parent-death signal
    _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "die with the outer process")
    return NAMESPACES


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
        signal.signal(number, signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
