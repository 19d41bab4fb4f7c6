"""The command line: Typer only. Each command parses, calls ``mlserve.service``, prints.

Nothing here imports pydantic, Jinja, cloud SDKs, paramiko or docker at module level, so
``mlserve --help`` starts as fast as a bare Typer app.
"""
