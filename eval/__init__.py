"""weightcast stage: eval, the last stage of the pipeline (zoo <- collect <- train_predictor <-
eval).

- `weightcast.eval.runtime`: the runtime, `Nowcaster` for any PyTorch loop and `NowcastHook` for
  the zoo's loop.
- The harness: `run_eval(load_eval_config(path))` (`weightcast eval`) measures bundles zero-shot
  on held-out tasks and writes a report of forecast errors and training speed-ups;
  `weightcast.eval.quickstart` (`weightcast quickstart`) runs the whole pipeline at debug size.

Importing this package loads nothing: the runtime does not pull in the harness (collect, the zoo
tasks, plotting), and the harness is imported from its modules when used.
"""
