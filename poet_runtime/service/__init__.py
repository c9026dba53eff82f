"""The POET service: ``python -m poet_runtime serve``, FastAPI on uvicorn (extra ``[service]``).

One server; every router is ``build_router(context)`` on one ``ServiceContext`` (``context``):

- ``app``: the application factory; ``auth`` (hashed API keys, scopes, per-key rate limits),
  ``problems`` (RFC 7807 errors), ``limits`` (request body size), ``health``, ``metrics``
  (Prometheus text);
- ``api``: the JSON routes, with ``generation`` (``/api/v1/enhance``, its answer cache and
  single flight), ``functions`` (functions, versions, rollback) and ``events_api`` (events as
  JSON or server-sent events);
- ``registry`` / ``registry_api``: the domain template registry (``/api/v1/templates``); the
  runtime's client is ``poet_runtime.generate.remote_templates``;
- ``dashboard`` (with ``dashboard_data`` and ``dashboard_render``): the web page at ``/``.

Nothing here is imported by the runtime's call path.
"""
