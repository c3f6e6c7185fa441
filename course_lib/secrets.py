"""Keeping secrets out of outputs: one redaction rule for reports, logs and error messages."""
from __future__ import annotations

import os
import re

SECRET_ENV_VARS = ("OPENAI_API_KEY", "HF_TOKEN")
# Anything shaped like an OpenAI key, even a short or partly masked one ("sk-ab...", "sk-***").
KEY_LIKE = re.compile(r"sk-[A-Za-z0-9_\-*.]{3,}")
MASK = "sk-***"


def redact(text: object, *secrets: str | None) -> str:
    """``text`` with every given secret, every secret environment variable's value, and
    every key-shaped string replaced by a mask."""
    s = str(text)
    values = [v for v in secrets if v] + [os.environ.get(v) for v in SECRET_ENV_VARS]
    for value in values:
        if value and len(value) >= 6:
            s = s.replace(value, "***")
    return KEY_LIKE.sub(MASK, s)
