"""The seccomp filter of the OS sandbox: system calls no generated program needs and
that widen the kernel's attack surface beyond what namespaces isolate."""

from __future__ import annotations

import platform
import struct

__all__ = ["seccomp_filter"]

# x86-64 system calls refused by the seccomp filter (see seccomp_filter)
_DENIED_SYSCALLS_X86_64 = {
    "ptrace": 101, "syslog": 103, "uselib": 134, "personality": 135, "vhangup": 153,
    "pivot_root": 155, "adjtimex": 159, "acct": 163, "settimeofday": 164, "mount": 165,
    "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175,
    "delete_module": 176, "quotactl": 179, "lookup_dcookie": 212, "clock_settime": 227,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "kcmp": 312, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438,
    "mount_setattr": 442, "inotify_init": 253, "inotify_add_watch": 254,
    "inotify_init1": 294,
}  # fmt: skip
_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_BIT = 0x40000000


def seccomp_filter() -> bytes | None:
    """The seccomp BPF program bubblewrap installs (``--seccomp FD``): every syscall in
    the deny list, and the x32 ABI, fail with EPERM; a foreign architecture is killed.
    None on machines other than x86-64 (the namespaces still hold there)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None

    def op(code: int, jt: int, jf: int, k: int) -> bytes:
        return struct.pack("=HBBI", code, jt, jf, k)

    ld, jeq, jge, ret = 0x20, 0x15, 0x35, 0x06
    nrs = sorted(_DENIED_SYSCALLS_X86_64.values())
    errno_at = 6 + len(nrs)  # index of the 'return EPERM' instruction
    prog = [
        op(ld, 0, 0, 4),  # seccomp_data.arch
        op(jeq, 1, 0, _AUDIT_ARCH_X86_64),
        op(ret, 0, 0, 0x80000000),  # SECCOMP_RET_KILL_PROCESS
        op(ld, 0, 0, 0),  # seccomp_data.nr
        op(jge, errno_at - 4 - 1, 0, _X32_BIT),
    ]
    for i, nr in enumerate(nrs):
        prog.append(op(jeq, errno_at - (5 + i) - 1, 0, nr))
    prog.append(op(ret, 0, 0, 0x7FFF0000))  # SECCOMP_RET_ALLOW
    prog.append(op(ret, 0, 0, 0x00050000 | 1))  # SECCOMP_RET_ERRNO | EPERM
    return b"".join(prog)
