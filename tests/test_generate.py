from course_lib.generate import sample_answers


def test_n_answers_per_prompt_in_order(small_model):
    model, tok = small_model
    prompts = ["一つ目", "二つ目の質問", "三"]
    out = sample_answers(model, tok, prompts, n=4, max_new_tokens=6, batch_size=5, progress=False)
    assert [len(a) for a in out] == [4, 4, 4]
    assert all(isinstance(s, str) for a in out for s in a)


def test_sampling_repeats_with_the_same_seed(small_model):
    model, tok = small_model
    kw = dict(n=3, temperature=1.0, max_new_tokens=8, progress=False)
    a = sample_answers(model, tok, ["質問"], seed=1, **kw)
    assert a == sample_answers(model, tok, ["質問"], seed=1, **kw)
    assert a != sample_answers(model, tok, ["質問"], seed=2, **kw)


def test_left_padding_batches_match_single_prompts(small_model):
    """Greedy answers must not depend on which other prompts share the batch."""
    model, tok = small_model
    prompts = ["短い", "これはずっと長い質問文で、パディングが必要になります"]
    batched = sample_answers(model, tok, prompts, temperature=0, max_new_tokens=8, batch_size=2, progress=False)
    single = [sample_answers(model, tok, [p], temperature=0, max_new_tokens=8, progress=False)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored for training
