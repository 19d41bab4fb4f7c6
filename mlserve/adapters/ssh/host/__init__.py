"""The half of the SSH adapter that runs on the host, shipped there as a zip archive.

It imports only the standard library and the stdlib-only mlserve modules packed beside it
(``mlserve.checks``, ``mlserve.adapters.procs``, ``mlserve.reqsets``), never paramiko, pydantic,
or ``typing``/``dataclasses`` (every import is paid for by the host's CPU on every SSH exec):
see ``mlserve.adapters.ssh.sync.helper_archive`` for what the archive holds.
"""
