"""Everything only the level-3 lesson needs: the medical self-improvement loop.

Read in this order: ``data`` (the questions and training sets) and ``drugs`` (names) →
``judge/`` (grading in JSON) → ``metrics`` (per question and overall) → ``selection``
(which questions failed and what the next iteration trains on: the loop's idea) →
``config`` and ``loop`` (the stage sequence) with ``evaluate`` and ``runs`` (one stage's
evaluation; run folders, resume) → ``plots``, ``discussion`` and ``report``.

Educational material, not medical advice (医療上の助言ではありません).
"""
