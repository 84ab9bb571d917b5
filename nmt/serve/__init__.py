"""``nmt serve``: a LibreTranslate-compatible translation server.

- :mod:`nmt.serve.app`: the HTTP API, limits and the web page (Starlette);
- :mod:`nmt.serve.batcher`: one worker thread per model merging concurrent requests into one
  batched search;
- :mod:`nmt.serve.detect`: offline language identification (``/detect``, ``source: auto``);
- :mod:`nmt.serve.server`: loading the models and running uvicorn.
"""
