"""``nmt serve``: a LibreTranslate-compatible translation server.

- :mod:`nmt.serve.app`: the HTTP API, limits and the web page (Starlette);
- :mod:`nmt.serve.batcher`: worker threads per model (two searches at once by default)
  merging concurrent requests into batched searches;
- :mod:`nmt.serve.detect`: offline language identification (``/detect``, ``source: auto``);
- :mod:`nmt.serve.server`: loading the models and running uvicorn.
"""
