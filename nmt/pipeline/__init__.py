"""The pipeline room: recipes, one experiment end to end.

- :mod:`~nmt.pipeline.recipe`: the stages (data, tokenizer, train, translate, score), skipped
  when done and resumed when interrupted;
- :mod:`~nmt.pipeline.reports`: what a run shares (``results.json``, the model card, the
  hardware), its paths made relative.

Sits beside :mod:`nmt.serve`, above every other room, below the command line.
"""
