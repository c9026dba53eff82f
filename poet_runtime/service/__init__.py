"""The POET service: ``python -m poet_runtime serve``, FastAPI on uvicorn (extra ``[service]``).

One server, three parts, each its own router on one ``ServiceContext`` (``context``):
- ``app``: the application factory, API keys and scopes, rate limits, problem documents,
  health, metrics, ``/api/v1/enhance``, feedback, functions, versions and events;
- ``registry`` / ``registry_api``: the domain template registry (``/api/v1/templates``),
  with the runtime's client in ``poet_runtime.generate.remote_templates``;
- ``dashboard``: the web page at ``/``.
Nothing here is imported by the runtime's call path.
"""
