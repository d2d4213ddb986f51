"""The Python audit hook the privacy tests install in their child process (``sys.addaudithook``):
it reports every open-for-writing, file-system change, outbound connection and DNS lookup made
from Python anywhere, to a ``report(kind, target)`` the test supplies. Imported by the child
scripts of ``studio/test_privacy.py`` (an AppTest session) and ``studio/test_privacy_e2e.py`` (a real server)."""
import os
import sys

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
PATH_EVENTS = {"os.mkdir", "os.rename", "os.replace", "os.remove", "os.rmdir", "os.symlink", "os.link", "os.truncate",
               "os.chmod", "shutil.copyfile", "shutil.copymode", "shutil.rmtree", "shutil.move"}


def install(report, local_hosts) -> None:
    """Install the hook; ``local_hosts``: addresses that do not count as leaving the machine."""

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            if path is None or isinstance(path, int):  # a file descriptor: stdout, a pipe
                return
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS)
            if writing and not os.fsdecode(path).startswith("/dev/"):
                report("write", os.fsdecode(path))
        elif event in PATH_EVENTS:
            target = args[0]
            report(event, os.fsdecode(target) if isinstance(target, (str, bytes, os.PathLike)) else repr(target))
        elif event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else address
            if host not in local_hosts:
                report("connect", repr(address))
        elif event == "socket.getaddrinfo":
            if args[0] not in local_hosts:
                report("dns", repr(args[0]))

    sys.addaudithook(hook)
