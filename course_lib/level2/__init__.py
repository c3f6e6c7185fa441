"""What the level-2 lesson (``notebooks/level2_parameters.py``) needs: measure what each knob does.

One noun per module:

- :mod:`.sweep`: the sweep. Many short LoRA runs on ONE base model kept in memory
  (``run_sweep``), one summary row per run plus every loss history (``SweepTable``),
  and the proof that the base model came back unchanged (``BaseSnapshot``).
- :mod:`.cost`: the cost. Time per step and peak memory against ``lora_r`` and
  sequence length (``measure_cost``), and Qwen3-0.6B's shapes without its weights.
- :mod:`.seeds`: training-seed variance. The same sweep under several training seeds
  (``run_seeds``), and verdicts that hold across them (``compare_across_seeds``: paired over
  validation examples within a seed, agreement across seeds), in the page's words.
- :mod:`.figures`: figures that show each seed and the mean (``seed_points``), and the check
  that a bar chart's value axis starts at 0 (``bars_start_at_zero``).
- :mod:`.tables`: the tables as the page shows them: Japanese headers, rounded numbers.
- :mod:`.explorer`: the ipywidgets explorer (sliders in JupyterLab, one figure elsewhere).
- :mod:`.final_test`: the final test. The recommended setting scored once on the test split
  (``split_scorer``), and the record of which examples the sweeps were given (``watch_records``).

Sweep configs and table columns carry the names learners meet again in PEFT
(``lora_r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``) and in
``transformers.TrainingArguments`` (``learning_rate``, ``num_train_epochs``,
``lr_scheduler_type``, ...; see :class:`course_lib.train.TrainConfig`). The LoRA
parameter arithmetic lives in :mod:`course_lib.lora`, the answer format in
:mod:`course_lib.level1`.
"""
