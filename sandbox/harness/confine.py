"""Operating-system confinement of the restricted worker: what holds when the Python layer falls.

Why: RestrictedPython and the guards are one layer; a single escape from them gives
the code the worker process itself. So the worker confines itself at start-up,
after importing what it needs and before it reads a byte of the protocol, with
layers the kernel enforces and the process cannot undo:

- ``namespaces``: a new user namespace (no capability in the host's namespaces,
  uids unmapped) and an empty network namespace (no interface, no route out).
- ``no_new_privs``: ``PR_SET_NO_NEW_PRIVS``, every capability dropped, not dumpable,
  and ``PR_SET_PDEATHSIG`` so the worker dies with the host (no fork is allowed,
  so nothing can outlive it).
- ``rlimits``: hard (not only soft) limits: no core, no file size, few fds,
  and at the first load the address space and CPU of its policy (``Limiter``).
- ``landlock``: the file system becomes read-only, and readable only beneath
  what it imports from (the interpreter's prefixes, ``sys.path``, the sandbox
  folder, shared libraries); no TCP bind/connect; no signal or ptrace (so no
  ``/proc/<pid>/mem``) reaching a process outside the worker.
- ``seccomp``: an allow-list of the system calls the harness needs (built with
  the system's libseccomp through ctypes); ``write`` only to the protocol pipe,
  ``open`` only for reading, ``clone`` only for threads, ``kill``/``tgkill`` only
  of itself; no ``execve``, ``fork``, ``socket``, ``ptrace``, ``rename``,
  ``link``, ``unlink``, ``process_vm_*``, ``prctl``, ``unshare``, ...

Why libseccomp and not our own BPF: it is the maintained part that knows each
architecture's syscall numbers, the x32/i386 entry points and argument layout;
pyseccomp would be a second ctypes shim over the same library for five calls.

Each layer is applied where the kernel offers it; ``apply`` returns the names
applied and the host compares them with its probe (``backends/os_sandbox.py``).
Imports nothing from poet_runtime; stdlib only.
"""

import ctypes
import ctypes.util
import errno
import os
import resource
import signal
import sys

LAYERS = ("rlimits", "no_new_privs", "seccomp", "landlock", "namespaces")
MAX_THREADS = 64

# --- constants (linux/prctl.h, linux/sched.h, linux/landlock.h, seccomp.h) ----------
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 1, 4, 38, 39
CLONE_NEWUSER, CLONE_NEWNET, CLONE_THREAD = 0x10000000, 0x40000000, 0x00010000
SYS_LANDLOCK_CREATE, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT = 444, 445, 446  # all 64-bit arches
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_ALL_V1 = (1 << 13) - 1
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
SCMP_FLTATR_CTL_NNP, SCMP_FLTATR_CTL_OPTIMIZE = 3, 8


def SCMP_ACT_ERRNO(code):
    return 0x00050000 | (code & 0xFFFF)


O_ACCMODE, O_CREAT, O_TRUNC, O_APPEND = 0o3, 0o100, 0o1000, 0o2000
# ioctl requests Python itself makes on its own fds (isatty, set_inheritable, ...).
SAFE_IOCTLS = (0x5401, 0x5450, 0x5451, 0x5421, 0x541B)  # TCGETS FIONCLEX FIOCLEX FIONBIO FIONREAD

# System calls the harness needs with any arguments. Everything not here (or in the
# argument-checked rules below) fails with EPERM.
ALLOWED = (
    "read", "readv", "pread64", "preadv", "preadv2", "close", "close_range",
    "fstat", "newfstatat", "stat", "lstat", "statx", "lseek", "getdents64", "getdents",
    "getcwd", "readlink", "readlinkat", "access", "faccessat", "faccessat2", "fcntl",
    "dup", "dup2", "dup3", "poll", "ppoll", "select", "pselect6",
    "mmap", "munmap", "mprotect", "mremap", "brk", "madvise", "membarrier",
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigsuspend", "sigaltstack", "restart_syscall",
    "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getgroups",
    "getresuid", "getresgid", "getpgrp", "getpgid", "getsid",
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "futex", "futex_waitv", "set_robust_list", "get_robust_list", "rseq", "set_tid_address",
    "setitimer", "getitimer", "alarm", "getrlimit", "setrlimit", "getrusage", "times",
    "sched_yield", "sched_getaffinity", "getrandom", "sysinfo", "uname", "getcpu",
    "exit", "exit_group",
)


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _prctl(libc, option, arg=0):
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}): {os.strerror(ctypes.get_errno())}")


# --- probes (also used by the host through this file) --------------------------------
def landlock_abi():
    """The kernel's Landlock ABI version, 0 when it has none (or it is disabled)."""
    try:
        libc = _libc()
        version = libc.syscall(SYS_LANDLOCK_CREATE, None, ctypes.c_size_t(0),
                               ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(0, int(version))


def libseccomp():
    """The system's libseccomp, or None."""
    lib = None
    for name in ("libseccomp.so.2", "find"):  # find_library runs ldconfig: the fallback only
        try:
            name = ctypes.util.find_library("seccomp") if name == "find" else name
            lib = ctypes.CDLL(name, use_errno=True) if name else None
        except OSError:
            continue
        if lib is not None:
            break
    if lib is None:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def seccomp_available():
    try:
        with open("/proc/self/status", "rb") as f:
            has_field = b"\nSeccomp:" in f.read()
    except OSError:
        has_field = False
    return has_field and libseccomp() is not None


# --- layers --------------------------------------------------------------------------
def _namespaces(libc):
    """New user + network namespaces; must run while the process has one thread."""
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare: " + os.strerror(ctypes.get_errno()))


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities(libc):
    number = SYS_CAPSET.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, "capset: unknown architecture")
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if libc.syscall(number, ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset: " + os.strerror(ctypes.get_errno()))


def _privileges(libc, parent):
    try:
        _drop_capabilities(libc)
        dropped = "no capabilities"
    except OSError:  # best effort: without the namespace or root there is little to drop
        dropped = "capabilities kept"
    _prctl(libc, PR_SET_NO_NEW_PRIVS, 1)
    _prctl(libc, PR_SET_DUMPABLE, 0)
    # Set last: a change of credentials clears it. The signal comes when the host
    # thread that started us ends, so the host starts workers from a thread that
    # lives as long as it does (workers.py).
    _prctl(libc, PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the host died before the line above
        os._exit(70)
    return f"{dropped}, not dumpable, dies with the host"


def _rlimits(max_fds, own_namespace):
    for which, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NOFILE, max_fds)):
        resource.setrlimit(which, (value, value))
    nproc = None
    if own_namespace and hasattr(resource, "RLIMIT_NPROC"):
        # Threads count too (the harness's timers need a few); no process can be made
        # anyway (seccomp). In its own user namespace the count is the worker's alone;
        # in the host's it would be every process of the user, so it is left alone there.
        nproc = MAX_THREADS
        try:
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        except (ValueError, OSError):
            nproc = None
    return f"hard: core 0, fsize 0, nofile {max_fds}" + (f", nproc {nproc}" if nproc else "")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def readable_roots(extra=()):
    """Where the worker may read after confinement: what Python imports from."""
    roots = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path, *extra]
    roots += ["/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/local/lib", "/etc/ld.so.cache"]
    seen, result = set(), []
    for root in roots:
        if not root:
            continue
        real = os.path.realpath(root)
        if real in seen or not os.path.exists(real) or real in ("/", "/proc", "/dev", "/sys"):
            continue
        seen.add(real)
        result.append(real)
    return result


def _landlock(libc, abi, roots):
    fs = FS_ALL_V1
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    if abi >= 5:
        fs |= FS_IOCTL_DEV
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = libc.syscall(SYS_LANDLOCK_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset: " + os.strerror(ctypes.get_errno()))
    try:
        for root in roots:
            try:
                fd = os.open(root, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                is_dir = os.path.isdir(root)
                rule = _PathBeneath(FS_READ_FILE | FS_READ_DIR if is_dir else FS_READ_FILE, fd)
                if libc.syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                                ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    raise OSError(ctypes.get_errno(), f"landlock_add_rule({root}): {os.strerror(ctypes.get_errno())}")
            finally:
                os.close(fd)
        if libc.syscall(SYS_LANDLOCK_RESTRICT, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self: " + os.strerror(ctypes.get_errno()))
    finally:
        os.close(ruleset)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def _seccomp(lib, write_fds):
    pid = os.getpid()
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO(errno.EPERM))
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        lib.seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2)  # a binary tree: fewer checks per call

        def rule(name, *conditions, action=SCMP_ACT_ALLOW):
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                return  # not a system call on this architecture
            array = (_ArgCmp * len(conditions))(*[_ArgCmp(*c) for c in conditions]) if conditions else None
            result = lib.seccomp_rule_add_array(ctx, action, number, len(conditions), array)
            if result < 0:
                raise OSError(-result, f"seccomp rule for {name}: {os.strerror(-result)}")

        for name in ALLOWED:
            rule(name)
        for fd in write_fds:  # the protocol pipe only (fds 0-2 are /dev/null anyway)
            rule("write", (0, SCMP_CMP_EQ, fd, 0))
            rule("writev", (0, SCMP_CMP_EQ, fd, 0))
        no_write = O_ACCMODE | O_CREAT | O_TRUNC | O_APPEND
        rule("openat", (2, SCMP_CMP_MASKED_EQ, no_write, 0))
        rule("open", (1, SCMP_CMP_MASKED_EQ, no_write, 0))
        rule("clone", (0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD))  # threads, never a process
        rule("clone3", action=SCMP_ACT_ERRNO(errno.ENOSYS))  # its flags are out of reach: glibc falls back to clone
        rule("kill", (0, SCMP_CMP_EQ, pid, 0))
        rule("tgkill", (0, SCMP_CMP_EQ, pid, 0))
        rule("rt_sigqueueinfo", (0, SCMP_CMP_EQ, pid, 0))
        rule("prlimit64", (0, SCMP_CMP_EQ, 0, 0))  # its own limits (lowering; raising needs a capability)
        for request in SAFE_IOCTLS:
            rule("ioctl", (1, SCMP_CMP_EQ, request, 0))
        result = lib.seccomp_load(ctx)
        if result < 0:
            raise OSError(-result, "seccomp_load: " + os.strerror(-result))
    finally:
        lib.seccomp_release(ctx)


def apply(write_fds, parent, extra_readable=(), max_fds=64, skip=()):
    """Apply every layer this machine offers, except ``skip``; return {layer: detail or error}.

    Applied layers map to a short description, missing ones to ``None`` plus the
    reason under ``"<layer>:why"``. Must be called while the process has one thread."""
    libc = _libc()
    report = {}

    def attempt(name, action):
        if name in skip:
            report[name] = None
            report[name + ":why"] = "skipped"
            return
        try:
            report[name] = action() or "on"
        except Exception as error:  # noqa: BLE001 - a layer the kernel refuses is reported, not fatal
            report[name] = None
            report[name + ":why"] = f"{type(error).__name__}: {error}"[:200]

    seccomp_lib = None if "seccomp" in skip else libseccomp()  # loaded while files are still readable
    attempt("namespaces", lambda: _namespaces(libc) or "user+net")
    attempt("no_new_privs", lambda: _privileges(libc, parent))
    attempt("rlimits", lambda: _rlimits(max_fds, bool(report.get("namespaces"))))
    abi = landlock_abi()

    def landlock():
        if abi <= 0:
            raise OSError(errno.ENOSYS, "the kernel has no Landlock")
        _landlock(libc, abi, readable_roots(extra_readable))
        return f"ABI {abi}" + (": files, tcp, signals" if abi >= 6 else ": files, tcp" if abi >= 4 else ": files")

    attempt("landlock", landlock)

    def seccomp():
        if seccomp_lib is None:
            raise OSError(errno.ENOENT, "libseccomp.so.2 not found")
        _seccomp(seccomp_lib, write_fds)
        return "allow-list"

    attempt("seccomp", seccomp)
    return report


class Limiter:
    """The hard address-space and CPU limits of a worker, fixed at its first limited request.

    A hard limit can only go down, so a worker serves the limits of the first policy
    it was given: memory ``memory_mb`` over its size at start (plus ``SLACK_MB`` for
    the harness's own growth), and a lifetime CPU budget of ``LIFETIME_CALLS`` calls'
    worth of ``cpu_ms`` (at least ``MIN_LIFETIME_S``). A request that would need more
    (another policy's larger limits) is declined before anything runs (``fits``), and
    the host sends it to another worker; a worker near its CPU budget retires."""

    SLACK_MB = 64
    LIFETIME_CALLS = 20
    MIN_LIFETIME_S = 30

    def __init__(self, base_bytes):
        self.base = base_bytes
        self.fixed = False
        self.memory_mb = None
        self.cpu_ms = None
        self.hard_as = resource.RLIM_INFINITY
        self.hard_cpu = resource.RLIM_INFINITY

    def fits(self, memory_mb, cpu_ms):
        if not self.fixed:
            return True
        if (memory_mb is None) != (self.memory_mb is None) or (memory_mb or 0) > (self.memory_mb or 0):
            return False
        if (cpu_ms is None) != (self.cpu_ms is None):
            return False
        return cpu_ms is None or self.cpu_used() + cpu_ms / 1000.0 + 1 < self.hard_cpu

    def fix(self, memory_mb, cpu_ms):
        """Lower the hard limits to this policy's (once)."""
        if self.fixed:
            return
        self.fixed, self.memory_mb, self.cpu_ms = True, memory_mb, cpu_ms
        if memory_mb:
            self.hard_as = self.base + (memory_mb + self.SLACK_MB) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (self.hard_as, self.hard_as))
        if cpu_ms:
            lifetime = max(self.MIN_LIFETIME_S, cpu_ms * self.LIFETIME_CALLS / 1000.0)
            self.hard_cpu = int(self.cpu_used() + lifetime) + 2
            resource.setrlimit(resource.RLIMIT_CPU, (self.hard_cpu, self.hard_cpu))

    def cap(self, base_bytes, memory_mb):
        if not memory_mb:
            return self.hard_as
        cap = base_bytes + memory_mb * 1024 * 1024
        return cap if self.hard_as == resource.RLIM_INFINITY else min(cap, self.hard_as)

    def cpu_soft(self, cpu_ms):
        if not cpu_ms:
            return self.hard_cpu
        soft = int(self.cpu_used() + cpu_ms / 1000.0 + 0.999) + 1
        return soft if self.hard_cpu == resource.RLIM_INFINITY else min(soft, self.hard_cpu)

    def worn(self, cpu_ms):
        """Near the end of its CPU lifetime: replace it before a call is cut short."""
        return bool(cpu_ms) and self.hard_cpu != resource.RLIM_INFINITY and \
            self.cpu_used() + 2 * (cpu_ms / 1000.0 + 1) >= self.hard_cpu

    @staticmethod
    def cpu_used():
        used = resource.getrusage(resource.RUSAGE_SELF)
        return used.ru_utime + used.ru_stime
