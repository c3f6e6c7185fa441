"""Shared fixtures: a small tiny-Qwen3 model built once per test session."""
from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "notebook: executes a lesson notebook with papermill (slow)")
    config.addinivalue_line("markers", "browser: needs headless chromium")


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory):
    """A deliberately small build of the tiny model (seconds), for unit tests of the helpers."""
    from course_lib.tiny_model import build_tiny_model, quick_recipe

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", quick_recipe(), progress=False)


@pytest.fixture()
def small_model(small_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_model_dir)
    model = AutoModelForCausalLM.from_pretrained(small_model_dir)
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def course_model():
    """The real embedded tiny model (cached under .cache/, built on first use)."""
    from course_lib.profiles import load_model

    return load_model("tiny", verbose=False)


@pytest.fixture()
def fresh_course_model(course_model):
    """A fresh copy of the embedded tiny model: attaching LoRA changes a model in place."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(course_model.source).eval(), course_model.tokenizer
