"""Reference services of a test environment: ``auth``, ``backend`` and ``frontend``.

Each runs as ``python -m testenv_services.<name>``, is configured only through environment
variables (see ``docs/protocol.md``) and exposes ``create_app(settings)`` for in-process tests.
"""
