"""``prismcache tune``: learn from the operator's labelled pairs (see ``docs/tuning.md``).

- :mod:`prismcache.tune.run`: the command and :func:`~prismcache.tune.run.tune`, the pipeline;
- :mod:`prismcache.tune.adapter`: the contrastive adapter trainer (numpy);
- :mod:`prismcache.tune.verifier` and :mod:`prismcache.tune.boost`: the built-in verifier
  refitted with numpy-only gradient boosting;
- serving is :class:`prismcache.embedders.tuned.TunedEmbedder` (spec ``tuned:DIR``) and the
  ``builtin:DIR/verifier.npz`` verifier: nothing here is imported on the request path.
"""
